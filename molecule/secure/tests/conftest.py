"""Shared facts for the secure scenario's verify step: secrets, TLS material, Redis clients."""

from __future__ import annotations

import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import testinfra
import yaml

REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO))
from testkit import molecule_inventory, playbook  # noqa: E402  (needs the repository's root)

SCENARIO = Path(__file__).resolve().parents[1]
# The bundle's CA and certificates on the controller: the pki role's pki_dir at its default.
PKI = REPO / "build/pki"
# Redis's TLS ports as published on the controller's loopback by molecule.yml:
# the broker's server (6379) and the results server (6380).
CONTROLLER_PORT = 16391
RESULTS_CONTROLLER_PORT = 16392
BROKER_PORT = 6379
RESULTS_PORT = 6380
WORKER = "mol-secure-worker1"
TLS_DIR = "/etc/redis/tls"


@dataclass(frozen=True)
class Secrets:
    admin: str
    celery: str
    monitor: str


@pytest.fixture(scope="session")
def secrets() -> Secrets:
    """The throwaway passwords: the lab's (admin) and this scenario's host_vars."""
    lab = yaml.safe_load((REPO / "inventories/lab/group_vars/all/vault.yml").read_text())
    own = yaml.safe_load((SCENARIO / "host_vars/secure.yml").read_text())
    return Secrets(
        admin=str(lab["vault_redis_password"]),
        celery=str(own["vault_redis_celery_password"]),
        monitor=str(own["vault_redis_monitor_password"]),
    )


def cli(
    host: testinfra.host.Host,
    *args: str,
    user: str | None = None,
    password: str | None = None,
    tls: bool = True,
    client_cert: bool = True,
    port: int = BROKER_PORT,
) -> str:
    """redis-cli on the Redis host; stdout and stderr together, never raising."""
    argv = ["redis-cli", "--no-auth-warning", "-h", "127.0.0.1", "-p", str(port)]
    if tls:
        argv += ["--tls", "--cacert", f"{TLS_DIR}/ca.crt"]
        if client_cert:
            argv += ["--cert", f"{TLS_DIR}/redis.crt", "--key", f"{TLS_DIR}/redis.key"]
    if user:
        argv += ["--user", user]
    auth = f"REDISCLI_AUTH={shlex.quote(password)} " if password else ""
    command = auth + shlex.join(argv + list(args)) + " 2>&1"
    return str(host.run(command).stdout).strip()


def worker_host() -> testinfra.host.Host:
    return testinfra.get_host(f"podman://{WORKER}")


def deploy(*args: str, timeout: float = 420) -> subprocess.CompletedProcess[str]:
    """ansible-playbook deploy.yml against the scenario's own inventory (as molecule wrote it)."""
    return playbook("deploy.yml", molecule_inventory(), *args, timeout=timeout)


@pytest.fixture
def host(host: testinfra.host.Host) -> testinfra.host.Host:
    """The same host through `podman exec`, not one Ansible module run per command.

    Testinfra's Ansible backend has no native mapping for the podman connection
    and would run every command as a module (about 1.5 s each here).
    """
    return testinfra.get_host(f"podman://{host.backend.host}")
