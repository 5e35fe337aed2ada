"""Security checks with outside tools: who each service runs as, its sandbox, and a TLS scan."""

from __future__ import annotations

import re
import subprocess

import pytest
import testinfra
from conftest import CONTROLLER_PORT, PKI, RESULTS_CONTROLLER_PORT, WORKER, worker_host

testinfra_hosts = ["redis"]

# (host, unit, its user, highest systemd-analyze exposure accepted). Debian's own
# redis-server unit scores 1.2; the Celery workers need a writable app state directory and
# network access, which is what keeps them above Redis.
UNITS = [
    ("redis", "redis-server.service", "redis", 2.0),
    ("redis", "redis-server@results.service", "redis", 2.0),
    ("worker", "celery-worker@default.service", "taskapp", 2.5),
]


def on(where: str, host: testinfra.host.Host) -> testinfra.host.Host:
    return host if where == "redis" else worker_host()


@pytest.mark.parametrize(("where", "unit", "user", "_bound"), UNITS)
def test_service_does_not_run_as_root(
    host: testinfra.host.Host, where: str, unit: str, user: str, _bound: float
) -> None:
    target = on(where, host)
    pid = target.check_output(f"systemctl show -p MainPID --value {unit}")
    assert pid != "0", f"{unit} is not running"
    # The main process and every child (prefork pool processes included).
    users = target.check_output(f"ps -o user= --pid {pid} --ppid {pid}").split()
    assert users, f"no processes for {unit}"
    assert set(users) == {user}, users


@pytest.mark.parametrize(("where", "unit", "_user", "bound"), UNITS)
def test_unit_exposure_is_bounded(
    host: testinfra.host.Host, where: str, unit: str, _user: str, bound: float
) -> None:
    out = on(where, host).check_output(f"systemd-analyze security --no-pager {unit}")
    match = re.search(r"Overall exposure level for \S+: ([0-9.]+)", out)
    assert match, out
    print(f"{unit}: exposure {match.group(1)}")
    assert float(match.group(1)) <= bound, out


def sslscan(port: int) -> str:
    """sslscan (Debian's package) from the controller, presenting the worker's certificate."""
    argv = ["sslscan", "--no-colour", "--no-heartbleed", "--no-renegotiation"]
    argv += [f"--certs={PKI / f'{WORKER}.crt'}", f"--pk={PKI / f'{WORKER}.key'}"]
    argv += [f"127.0.0.1:{port}"]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    return proc.stdout + proc.stderr


@pytest.mark.parametrize("port", [CONTROLLER_PORT, RESULTS_CONTROLLER_PORT])
def test_tls_scan_finds_only_modern_protocols_and_ciphers(port: int) -> None:
    out = sslscan(port)
    found = re.findall(r"^(SSLv[23]|TLSv1\.[0-3])\s+(enabled|disabled)", out, re.MULTILINE)
    protocols = dict(found)
    assert protocols == {
        "SSLv2": "disabled",
        "SSLv3": "disabled",
        "TLSv1.0": "disabled",
        "TLSv1.1": "disabled",
        "TLSv1.2": "enabled",
        "TLSv1.3": "enabled",
    }, out
    accepted = re.findall(r"^(?:Preferred|Accepted)\s+(\S+)\s+\d+ bits\s+(\S+)", out, re.MULTILINE)
    assert accepted, out
    weak = [c for _, c in accepted if re.search(r"NULL|RC4|DES|EXP|MD5|anon", c)]
    assert not weak, out
