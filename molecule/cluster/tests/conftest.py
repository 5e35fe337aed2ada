"""Helpers for the cluster scenario's verify step: tasks from the controller, commands on hosts."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from celery import Celery

from rcbundle.config import celery_config, load_settings

SCENARIO = Path(__file__).resolve().parents[1]
REPO = SCENARIO.parents[1]
sys.path.insert(0, str(REPO))
from testkit import molecule_inventory, on, playbook  # noqa: E402  (needs the repository's root)

# Redis's port as published on the controller's loopback by molecule.yml.
CONTROLLER_PORT = 16396
WORKERS = ["mol-cluster-worker1", "mol-cluster-worker2"]
SPARE = "mol-cluster-worker3"
CELERY = (
    "env $(grep -v '^#' /etc/taskapp/celery.env) "
    "/opt/taskapp/current/venv/bin/celery --app taskapp.app:app"
)


def instances(host: str) -> list[dict[str, Any]]:
    """The host's worker instances, as the scenario's inventory declares them."""
    data = yaml.safe_load((SCENARIO / f"inventory/host_vars/{host}.yml").read_text())
    return list(data["celery_worker_instances"])


def invocation(host: str, unit: str) -> str:
    """The unit's InvocationID: it changes on every (re)start."""
    return on(host, f"systemctl show -p InvocationID --value {unit}").strip()


@pytest.fixture(scope="session")
def controller_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The workers' own config file, pointed at Redis through the controller's loopback.

    A producer reading the file the role wrote routes exactly as the workers consume.
    """
    text = on(WORKERS[0], "cat /etc/taskapp/config.toml")
    text = re.sub(r'(?m)^host = ".*"$', 'host = "127.0.0.1"', text, count=1)
    text = re.sub(r"(?m)^port = \d+$", f"port = {CONTROLLER_PORT}", text, count=1)
    path = tmp_path_factory.mktemp("controller") / "config.toml"
    path.write_text(text)
    return path


@pytest.fixture(scope="session")
def client(controller_config: Path) -> Iterator[Celery]:
    app = Celery("cluster-verify", config_source=celery_config(load_settings(controller_config)))
    yield app
    app.close()


def deploy(name: str, *args: str, timeout: float = 420) -> subprocess.CompletedProcess[str]:
    """ansible-playbook NAME against the scenario's own inventory (as molecule wrote it)."""
    return playbook(name, molecule_inventory(), *args, timeout=timeout)
