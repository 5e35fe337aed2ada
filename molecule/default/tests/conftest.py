"""Shared facts for the default scenario's verify step."""

from __future__ import annotations

from pathlib import Path

import pytest
import testinfra
import yaml

REPO = Path(__file__).resolve().parents[3]


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
