"""The cluster scenario's verify step: the fleet's states as fixtures, tasks from the controller,
commands on hosts.

Some modules change the fleet for good: a host joins (scale-out), a host is drained, an
instance is replaced. ORDER runs the modules from the fleet converge leaves to those changes,
and each module asks, through a fixture, for the state it needs: `scaled_out` deploys the
spare host once for every module that needs it, the others check the state and bring it back
when an earlier run changed it (which a fresh converge never needs). So any module also runs
alone, and the whole run deploys no more than the modules' own changes.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from celery import Celery

from rcbundle.config import celery_config, load_settings

SCENARIO = Path(__file__).resolve().parents[1]
REPO = SCENARIO.parents[1]
sys.path.insert(0, str(REPO))
# Needs the repository's root on the path.
from testkit import molecule_inventory, on, playbook  # noqa: E402
from testkit.controller import worker_config, write_toml  # noqa: E402

# Redis's port as published on the controller's loopback by molecule.yml.
CONTROLLER_PORT = 16396
WORKERS = ["mol-cluster-worker1", "mol-cluster-worker2"]
# worker2 runs CPU work only; the drain and decommission modules change it.
CPU_HOST = "mol-cluster-worker2"
SPARE = "mol-cluster-worker3"
SCALE_OUT = SCENARIO / "inventory/scale-out.yml"
CELERY = (
    "env $(grep -v '^#' /etc/taskapp/celery.env) "
    "/opt/taskapp/current/venv/bin/celery --app taskapp.app:app"
)

# The modules, from the fleet as converged to the fleet changed for good.
ORDER = [
    "test_fleet",  # the converged fleet, as the inventory declares it
    "test_stop",  # stops a unit and starts it again
    "test_scale_out",  # the spare host joins (scaled_out)
    "test_rolling_restart",  # a configuration change, on the scaled-out fleet
    "test_drain",  # worker2 drained
    "test_decommission",  # worker2's instance replaced
    "test_backup_restore",  # the Redis host rebuilt from a backup; the fleet as it found it
]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run the modules in ORDER (each module's own tests keep their order)."""
    unknown = {item.path.stem for item in items} - set(ORDER)
    if unknown:
        raise pytest.UsageError(f"{', '.join(sorted(unknown))}: add to ORDER in {__file__}")
    items.sort(key=lambda item: ORDER.index(item.path.stem))


def instances(host: str) -> list[dict[str, Any]]:
    """The host's worker instances, as the scenario's inventory declares them."""
    data = yaml.safe_load((SCENARIO / f"inventory/host_vars/{host}.yml").read_text())
    return list(data["celery_worker_instances"])


def invocation(host: str, unit: str) -> str:
    """The unit's InvocationID: it changes on every (re)start."""
    return on(host, f"systemctl show -p InvocationID --value {unit}").strip()


def active(host: str, unit: str) -> bool:
    return on(host, f"systemctl is-active {unit} || true").strip() == "active"


def deployed_nodes(host: str) -> set[str]:
    """The worker nodes the role has set up on the host (one drop-in directory each)."""
    out = on(host, "ls -d /etc/systemd/system/celery-worker@*.service.d 2>/dev/null || true")
    return {line.split("@", 1)[1].removesuffix(".service.d") for line in out.split()}


def wait_started(result: object, deadline: float) -> str:
    """The worker (NAME@HOST) a task runs on, once it has started."""
    while time.monotonic() < deadline:
        if result.state == "STARTED":  # type: ignore[attr-defined]
            return str(result.info["hostname"])  # type: ignore[attr-defined]
        time.sleep(0.2)
    raise AssertionError("the task never started")


def deploy(name: str, *args: str, timeout: float = 420) -> subprocess.CompletedProcess[str]:
    """ansible-playbook NAME against the scenario's own inventory (as molecule wrote it)."""
    return playbook(name, molecule_inventory(), *args, timeout=timeout)


def assert_ok(proc: subprocess.CompletedProcess[str]) -> None:
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]


@pytest.fixture(scope="session")
def controller_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The workers' own config file, pointed at Redis through the controller's loopback.

    A producer reading the file the role wrote routes exactly as the workers consume.
    """
    data = worker_config(WORKERS[0], port=CONTROLLER_PORT)
    return write_toml(data, tmp_path_factory.mktemp("controller") / "config.toml")


@pytest.fixture(scope="session")
def client(controller_config: Path) -> Iterator[Celery]:
    app = Celery("cluster-verify", config_source=celery_config(load_settings(controller_config)))
    yield app
    app.close()


def _cpu_host_as_declared(*, running: bool) -> None:
    """worker2 has its inventory's instances set up (and, with running, active): an earlier
    run's decommission is undone by a deploy limited to it, a drain by starting the units."""
    # Each of the scenario's instances sets its concurrency: one node, named as the instance.
    declared = {i["name"] for i in instances(CPU_HOST)}
    if deployed_nodes(CPU_HOST) != declared:
        assert_ok(deploy("deploy.yml", "--limit", CPU_HOST))
    elif running:
        units = " ".join(f"celery-worker@{name}" for name in sorted(declared))
        on(CPU_HOST, f"systemctl enable --now {units}", timeout=180)


@pytest.fixture(scope="module")
def cpu_host_deployed() -> None:
    """worker2's inventory instances are set up, running or drained."""
    _cpu_host_as_declared(running=False)


@pytest.fixture(scope="module")
def cpu_host_serving() -> None:
    """worker2's inventory instances are set up and running."""
    _cpu_host_as_declared(running=True)


@pytest.fixture(scope="module")
def fleet_as_converged(cpu_host_serving: None) -> None:
    """The fleet as converge leaves it: worker2 as declared, and the spare host, which an
    earlier run's scale-out may have deployed, consuming nothing."""
    units = [f"celery-worker@{i['name']}" for i in instances(SPARE)]
    if any(active(SPARE, unit) for unit in units):
        on(SPARE, f"systemctl disable --now {' '.join(units)}", timeout=180)


@dataclass(frozen=True)
class ScaleOut:
    """The deploy that added the spare host, and the fleet's units' invocations before it."""

    proc: subprocess.CompletedProcess[str]
    before: dict[tuple[str, str], str]


@pytest.fixture(scope="session")
def scaled_out() -> ScaleOut:
    """The spare host joins group celery_workers (scale-out.yml), as a user adds a host to
    hosts.yml, through the deploy users run: once per session, for every module after it."""
    units = [(h, f"celery-worker@{i['name']}") for h in WORKERS for i in instances(h)]
    units.append(("mol-cluster-worker1", "celery-beat"))
    before = {(h, u): invocation(h, u) for h, u in units}
    proc = deploy("deploy.yml", "-i", str(SCALE_OUT))
    assert_ok(proc)
    return ScaleOut(proc=proc, before=before)
