"""Shared facts for the default scenario's verify step."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import testinfra
import yaml
from celery import Celery

REPO = Path(__file__).resolve().parents[3]
# testkit (playbook runs as a user makes them) is imported from the repository's root.
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
# Redis's port as published on the controller's loopback by molecule.yml.
CONTROLLER_PORT = 16390


@pytest.fixture(scope="session")
def redis_password() -> str:
    """The lab's throwaway password, as the scenario's group_vars link provides it."""
    vault = REPO / "inventories/lab/group_vars/all/vault.yml"
    return str(yaml.safe_load(vault.read_text())["vault_redis_password"])


@pytest.fixture
def host(host: testinfra.host.Host) -> testinfra.host.Host:
    """The same host through `podman exec`, not one Ansible module run per command.

    Testinfra's Ansible backend has no native mapping for the podman connection
    and would run every command as a module (about 1.5 s each here).
    """
    return testinfra.get_host(f"podman://{host.backend.host}")


@pytest.fixture(scope="module")
def client(redis_password: str) -> Iterator[Celery]:
    """A producer with no code of the bundle's: plain Celery, the broker URL and nothing else."""
    url = f"redis://:{redis_password}@127.0.0.1:{CONTROLLER_PORT}"
    app = Celery("producer", broker=f"{url}/0", backend=f"{url}/1")
    yield app
    app.close()
