"""The whole task workload runs through the least-privilege user over TLS, denied nothing."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import testinfra
from conftest import (
    BROKER_PORT,
    CONTROLLER_PORT,
    PKI,
    RESULTS_CONTROLLER_PORT,
    RESULTS_PORT,
    WORKER,
    Secrets,
    cli,
    worker_host,
)

from testkit.controller import worker_config, write_toml

testinfra_hosts = ["redis"]
HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def controller_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The worker host's own config file for the controller, as one more client: the Celery
    user, through the published TLS ports, with the worker host's bundle-issued certificate."""
    data = worker_config(WORKER, port=CONTROLLER_PORT, result_port=RESULTS_CONTROLLER_PORT, pki=PKI)
    return write_toml(data, tmp_path_factory.mktemp("controller") / "config.toml")


def run_client(
    script: str, config: Path, *args: str, timeout: float
) -> subprocess.CompletedProcess[str]:
    """One of this directory's client scripts, run from the controller as the Celery user."""
    return subprocess.run(
        [sys.executable, str(HERE / script), *args],
        env={**os.environ, "RCBUNDLE_CONFIG": str(config)},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_workers_use_tls_and_the_celery_user(host: testinfra.host.Host) -> None:
    worker = worker_host()
    conf = worker.file("/etc/taskapp/config.toml")
    assert 'username = "celery"' in conf.content_string
    assert "enabled = true" in conf.content_string
    # The results server's port follows from the Redis host's inventory.
    assert f"result_port = {RESULTS_PORT}" in conf.content_string
    assert worker.file("/etc/taskapp/tls/client.key").mode == 0o640


def test_workload_leaves_acl_log_empty(
    host: testinfra.host.Host, secrets: Secrets, controller_config: Path
) -> None:
    assert cli(host, "acl", "log", "reset", user="admin", password=secrets.admin) == "OK"
    proc = run_client("workload.py", controller_config, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # celery inspect ping as the workers' own hosts run it.
    ping = worker_host().run(
        "env $(grep -v '^#' /etc/taskapp/celery.env) /opt/taskapp/current/venv/bin/celery "
        "--app taskapp.app:app inspect ping --timeout 10"
    )
    assert ping.rc == 0, ping.stdout + ping.stderr
    clients = cli(host, "client", "list", user="admin", password=secrets.admin)
    assert "user=celery" in clients
    assert cli(host, "acl", "log", user="admin", password=secrets.admin) == ""


def count_keys(host: testinfra.host.Host, secrets: Secrets, port: int, pattern: str) -> int:
    out = cli(
        host,
        "-n",
        "1",
        "--scan",
        "--pattern",
        pattern,
        user="admin",
        password=secrets.admin,
        port=port,
    )
    return len(out.split())


def test_results_are_stored_in_the_results_server(
    host: testinfra.host.Host, secrets: Secrets
) -> None:
    # Runs after the workload above (tests run in file order).
    pattern = "taskapp:celery-task-meta-*"
    assert count_keys(host, secrets, RESULTS_PORT, pattern) > 0
    assert count_keys(host, secrets, BROKER_PORT, pattern) == 0


def test_pickle_message_is_rejected_and_not_executed(
    host: testinfra.host.Host, controller_config: Path
) -> None:
    worker = worker_host()
    marker = "/tmp/pickle-executed"
    worker.run(f"rm -f {marker}")
    since = worker.check_output("date +%s")
    proc = run_client("pickle_probe.py", controller_config, marker, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    journal = ""
    for _ in range(30):
        journal = worker.check_output(
            f"journalctl -u 'celery-worker@*' --since @{since} --no-pager"
        )
        if "untrusted content of type pickle" in journal:
            break
        time.sleep(1)
    assert "Refusing to deserialize untrusted content of type pickle" in journal, journal[-2000:]
    assert not worker.file(marker).exists
