"""Shared facts for the default scenario's verify step."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="session")
def redis_password() -> str:
    """The lab's throwaway password, as the scenario's group_vars link provides it."""
    vault = REPO / "inventories/lab/group_vars/all/vault.yml"
    return str(yaml.safe_load(vault.read_text())["vault_redis_password"])
