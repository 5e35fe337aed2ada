"""TLS only: the plain port is closed, clients must present a certificate, old TLS is refused."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import redis
import testinfra
from conftest import CONTROLLER_PORT, PKI, WORKER, Secrets, cli, worker_host

testinfra_hosts = ["redis"]


def test_plain_tcp_is_refused(host: testinfra.host.Host) -> None:
    out = cli(host, "ping", tls=False)
    assert "PONG" not in out, out
    assert "NOAUTH" not in out, out
    assert host.file("/etc/redis/redis.conf").contains("^port 0$")


def test_tls_without_client_certificate_is_refused(host: testinfra.host.Host) -> None:
    out = cli(host, "ping", client_cert=False)
    assert "PONG" not in out, out
    assert "NOAUTH" not in out, out


def test_tls_with_client_certificate_reaches_auth(host: testinfra.host.Host) -> None:
    assert cli(host, "ping").startswith("NOAUTH")


def s_client(*args: str) -> str:
    argv = ["openssl", "s_client", "-connect", f"127.0.0.1:{CONTROLLER_PORT}"]
    argv += ["-cert", str(PKI / f"{WORKER}.crt"), "-key", str(PKI / f"{WORKER}.key"), *args]
    proc = subprocess.run(argv, input="", capture_output=True, text=True, timeout=20, check=False)
    return proc.stdout + proc.stderr


def test_tls_1_1_is_refused() -> None:
    # SECLEVEL=0 lets the controller's OpenSSL offer TLS 1.1; the refusal is the server's.
    out = s_client("-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0", "-CAfile", str(PKI / "ca.crt"))
    assert "alert protocol version" in out, out


def test_tls_1_2_is_accepted_and_verified() -> None:
    out = s_client("-tls1_2", "-verify_return_error", "-CAfile", str(PKI / "ca.crt"))
    assert "Verify return code: 0 (ok)" in out, out


@pytest.fixture(scope="module")
def other_ca(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("other-ca")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-subj", "/CN=another CA", "-days", "1",
         "-keyout", str(path / "ca.key"), "-out", str(path / "ca.crt")],
        capture_output=True, check=True, timeout=30,
    )  # fmt: skip
    return path / "ca.crt"


def tls_client(ca: Path, secrets: Secrets) -> redis.Redis:
    return redis.Redis(
        host="127.0.0.1",
        port=CONTROLLER_PORT,
        username="celery",
        password=secrets.celery,
        ssl=True,
        ssl_ca_certs=str(ca),
        ssl_certfile=str(PKI / f"{WORKER}.crt"),
        ssl_keyfile=str(PKI / f"{WORKER}.key"),
        ssl_cert_reqs="required",
        socket_timeout=10,
    )


def test_client_trusting_another_ca_fails_verification(other_ca: Path, secrets: Secrets) -> None:
    with pytest.raises(redis.exceptions.ConnectionError, match="certificate verify failed"):
        tls_client(other_ca, secrets).ping()


def test_client_trusting_the_bundle_ca_connects(secrets: Secrets) -> None:
    assert tls_client(PKI / "ca.crt", secrets).ping() is True


def test_tls_key_is_readable_by_redis_only(host: testinfra.host.Host) -> None:
    key = host.file("/etc/redis/tls/redis.key")
    assert key.user == "root"
    assert key.group == "redis"
    assert key.mode == 0o640
    assert host.file("/etc/redis/tls").mode == 0o750


def test_each_host_holds_the_bundles_ca_and_the_certificate_issued_for_it(
    host: testinfra.host.Host,
) -> None:
    """The certificates step issued them on the controller; the roles installed them as is."""
    worker = worker_host()
    installed = [
        (host, "/etc/redis/tls/ca.crt", PKI / "ca.crt"),
        (host, "/etc/redis/tls/redis.crt", PKI / f"{host.backend.name}.crt"),
        (worker, "/etc/taskapp/tls/ca.crt", PKI / "ca.crt"),
        (worker, "/etc/taskapp/tls/client.crt", PKI / f"{WORKER}.crt"),
    ]
    for on, path, issued in installed:
        assert on.file(path).content_string == issued.read_text(), path


def test_ca_key_stays_on_the_controller(host: testinfra.host.Host) -> None:
    assert not host.file("/etc/redis/tls/ca.key").exists
    assert (PKI / "ca.key").stat().st_mode & 0o077 == 0


def test_worker_trusting_another_ca_never_connects(other_ca: Path) -> None:
    """A real Celery worker on the worker host, its config pointing at a foreign CA."""
    worker = worker_host()
    probe = "/run/wrong-ca-probe"
    worker.run(f"rm -rf {probe} && install -d -m 0755 {probe}")
    worker.run(f"cat > {probe}/ca.crt <<'EOF'\n{other_ca.read_text()}EOF")
    worker.run(
        f"sed 's#^ca_file = .*#ca_file = \"{probe}/ca.crt\"#' /etc/taskapp/config.toml"
        f" > {probe}/config.toml && chgrp taskapp {probe}/config.toml"
        f" && chmod 0640 {probe}/config.toml"
    )
    run = worker.run(
        f"CELERY_LOADER=rcbundle.loader:Loader RCBUNDLE_CONFIG={probe}/config.toml "
        "timeout 25 runuser -u taskapp -- "
        "/opt/taskapp/current/venv/bin/celery --app taskapp.app:app worker --pool solo "
        "--queues wrong-ca-probe --hostname wrong-ca@%h --without-mingle --without-gossip"
    )
    worker.run(f"rm -rf {probe}")
    output = run.stdout + run.stderr
    assert run.rc == 124, output[-3000:]  # still retrying when stopped: it never got in
    assert "certificate verify failed" in output, output[-3000:]
    assert "ready." not in output, output[-3000:]
