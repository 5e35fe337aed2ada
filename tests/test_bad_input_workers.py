"""The worker fleet's bad inventories stop the run before any host changes (issue 4).

Per-host cases use tests/badinput.py's one-worker inventory; fleet cases (beat
placement, queues nobody serves) add hosts and groups to it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from badinput import assert_refused, run_validation, write_inventory

SCHEDULE = {"tick": {"task": "taskapp.record", "every": 10}}
# Serves the default queue and the bundled routes (process_data -> cpu, fetch_url -> io).
SERVES_ALL = {"celery_worker_queues": ["celery", "cpu", "io"]}

# (case id, host_vars for the worker host, text the failure must contain)
HOST_CASES: list[tuple[str, dict[str, Any], list[str]]] = [
    (
        "zero concurrency",
        {"celery_worker_concurrency": 0},
        ["celery_worker_concurrency must be at least 1", "unset"],
    ),
    (
        "zero instance concurrency",
        {"celery_worker_instances": [{"name": "cpu", "concurrency": 0}]},
        ["celery_worker_instances entry cpu", "concurrency must be at least 1"],
    ),
    (
        "zero nodes",
        {"celery_worker_nodes": 0},
        ["celery_worker_nodes must be at least 1", "unset"],
    ),
    (
        "zero instance nodes",
        {"celery_worker_instances": [{"name": "cpu", "nodes": 0}]},
        ["celery_worker_instances entry cpu", "nodes must be at least 1"],
    ),
    (
        "node names collide",
        {"celery_worker_instances": [{"name": "a", "nodes": 2}, {"name": "a-2"}]},
        ["two worker nodes share a name", "NAME-N"],
    ),
    (
        "unknown instance kind",
        {"celery_worker_instances": [{"name": "cpu", "kind": "medium"}]},
        ["kind", "short", "long"],
    ),
    (
        "zero io multiplier",
        {"celery_worker_io_concurrency_multiplier": 0},
        ["celery_worker_io_concurrency_multiplier", "at least 1"],
    ),
    (
        "autoscale min above max",
        {"celery_worker_instances": [{"name": "cpu", "autoscale": [2, 4]}]},
        ["celery_worker_instances entry cpu", "autoscale is [max, min]"],
    ),
    (
        "autoscale on threads",
        {"celery_worker_instances": [{"name": "io", "pool": "threads", "autoscale": [8, 2]}]},
        ["celery_worker_instances entry io", "prefork pool only"],
    ),
    (
        "hard limit at the visibility timeout",
        {"celery_worker_time_limit": 3600},
        ["celery_worker_time_limit", "celery_worker_visibility_timeout", "runs twice"],
    ),
    (
        "instance hard limit at the visibility timeout",
        {
            "celery_worker_instances": [
                {"name": "slow", "soft_time_limit": 3500, "time_limit": 3600}
            ]
        },
        ["celery_worker_instances entry slow", "celery_worker_visibility_timeout", "runs twice"],
    ),
    (
        "TimeoutStopSec too short for the time limit",
        {"celery_worker_timeout_stop_sec": 300},
        ["celery_worker_timeout_stop_sec", "too short for the time limit", "340"],
    ),
    (
        "instance TimeoutStopSec too short for its time limit",
        {"celery_worker_instances": [{"name": "cpu", "time_limit": 600, "timeout_stop_sec": 605}]},
        ["celery_worker_instances entry cpu", "too short for the time limit", "610"],
    ),
    (
        "TimeoutStopSec 0 for derived",
        {"celery_worker_timeout_stop_sec": 0},
        ["celery_worker_timeout_stop_sec is 0", "leave celery_worker_timeout_stop_sec unset"],
    ),
    (
        "result port 0 for the broker's",
        {"celery_worker_redis_result_port": 0},
        ["celery_worker_redis_result_port is 0", "leave celery_worker_redis_result_port unset"],
    ),
    (
        "serial of no hosts",
        {"celery_worker_serial": "0%"},
        ["celery_worker_serial must be a number of hosts", "(got '0%')"],
    ),
    (
        "solo pool with concurrency",
        {"celery_worker_instances": [{"name": "one", "pool": "solo", "concurrency": 4}]},
        ["celery_worker_instances entry one", "solo pool"],
    ),
    (
        "per-child limits on a solo pool",
        {"celery_worker_instances": [{"name": "one", "pool": "solo", "max_tasks_per_child": 50}]},
        ["celery_worker_instances entry one", "max_tasks_per_child", "Use pool prefork"],
    ),
    (
        "schedule entry without interval",
        {"celery_worker_beat_schedule": {"tick": {"task": "taskapp.record"}}},
        ["celery_worker_beat_schedule", "every"],
    ),
    (
        "queue name with a space",
        {"celery_worker_instances": [{"name": "default", "queues": ["celery", "cpu", "io x"]}]},
        ["celery_worker_instances entry default: queue 'io x' may hold only letters"],
    ),
    (
        "host-wide queue name with a space",
        {"celery_worker_queues": ["celery", "cpu", "io x"]},
        ["queue 'io x' may hold only letters"],
    ),
    (
        "default queue name with a space",
        {"celery_worker_default_queue": "my queue", "celery_worker_queues": ["my queue"]},
        ["'my queue' may hold only letters"],
    ),
    (
        "route to a queue name with a comma",
        {"celery_worker_task_routes": {"taskapp.fetch_url": "io,cpu"}},
        ["celery_worker_task_routes: queue 'io,cpu' may hold only letters", "Rename the queue"],
    ),
    (
        "app module with a space",
        {"celery_worker_app_module": "proj.celery app"},
        ["celery_worker_app_module: 'proj.celery app' is not a Python module path"],
    ),
    (
        "memory limit in a unit systemd does not know",
        {"celery_worker_memory_max": "512MB"},
        ["celery_worker_memory_max: '512MB' is not infinity, a size in bytes"],
    ),
    (
        "only the current release kept",
        {"celery_worker_releases_kept": 1},
        ["celery_worker_releases_kept must be at least 2 (got 1)", "playbooks/rollback.yml"],
    ),
    (
        "redis host with a port",
        {"celery_worker_redis_host": "redis1:6379"},
        ["celery_worker_redis_host: 'redis1:6379' is not a host name", "without a port"],
    ),
]


@pytest.mark.parametrize(
    ("worker_vars", "expected"), [c[1:] for c in HOST_CASES], ids=[c[0] for c in HOST_CASES]
)
def test_bad_worker_input_is_refused(
    tmp_path: Path, worker_vars: dict[str, Any], expected: list[str]
) -> None:
    proc = run_validation(write_inventory(tmp_path, {}, SERVES_ALL | worker_vars, 0))
    assert_refused(proc, expected)


@pytest.mark.parametrize(
    "serial", ["celery_worker_serial=2", '{"celery_worker_serial": [1, "50%"]}']
)
def test_serial_forms_pass(tmp_path: Path, serial: str) -> None:
    # -e name=value gives the string "2", which the play's serial takes as a number.
    proc = run_validation(write_inventory(tmp_path, {}, SERVES_ALL, 0), "-e", serial)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def fleet_inventory(
    root: Path, workers: dict[str, dict[str, Any]], beat: list[str], group_vars: dict[str, Any]
) -> Path:
    """The harness's inventory, with worker hosts, a celery_beat group and worker group_vars."""
    hosts_file = write_inventory(root, {}, workers.pop("bad-worker", {}), 0)
    inventory = yaml.safe_load(hosts_file.read_text())
    groups = inventory["all"]["children"]
    local = {"ansible_connection": "local"}
    for name, host_vars in workers.items():
        groups["celery_workers"]["hosts"][name] = local
        (root / f"host_vars/{name}.yml").write_text(yaml.safe_dump(host_vars))
    groups["celery_beat"] = {"hosts": {name: local for name in beat}}
    hosts_file.write_text(yaml.safe_dump(inventory))
    (root / "group_vars/celery_workers.yml").write_text(yaml.safe_dump(group_vars))
    return hosts_file


def test_good_fleet_passes(tmp_path: Path) -> None:
    workers: dict[str, dict[str, Any]] = {"bad-worker": {"celery_worker_queues": ["celery", "cpu"]}}
    workers["bad-worker2"] = {"celery_worker_instances": [{"name": "io", "queues": ["io"]}]}
    group_vars = {"celery_worker_beat_schedule": SCHEDULE}
    proc = run_validation(fleet_inventory(tmp_path, workers, ["bad-worker2"], group_vars))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


FLEET_CASES: list[tuple[str, dict[str, dict[str, Any]], list[str], dict[str, Any], list[str]]] = [
    (
        "two beat hosts",
        {"bad-worker": SERVES_ALL, "bad-worker2": SERVES_ALL},
        ["bad-worker", "bad-worker2"],
        {"celery_worker_beat_schedule": SCHEDULE},
        ["celery_beat", "has 2 hosts", "Keep one host in group celery_beat"],
    ),
    (
        "schedule but no beat host",
        {"bad-worker": SERVES_ALL},
        [],
        {"celery_worker_beat_schedule": SCHEDULE},
        ["celery_worker_beat_schedule", "tick", "no host", "group celery_beat"],
    ),
    (
        "beat host that is not a worker",
        {"bad-worker": SERVES_ALL},
        ["bad-redis"],
        {"celery_worker_beat_schedule": SCHEDULE},
        ["bad-redis", "must also be in group celery_workers"],
    ),
    (
        "beat switched on outside its group",
        {"bad-worker": SERVES_ALL, "bad-worker2": SERVES_ALL | {"celery_worker_beat": True}},
        ["bad-worker"],
        {"celery_worker_beat_schedule": SCHEDULE},
        ["celery_worker_beat is true on bad-worker2, which is not in group celery_beat"],
    ),
    (
        "a routed queue nobody serves",
        {"bad-worker": {"celery_worker_queues": ["celery", "cpu"]}},
        [],
        {},
        ["celery_worker_task_routes", "io, which no worker", "celery_worker_queues"],
    ),
    (
        "a scheduled queue nobody serves",
        {"bad-worker": SERVES_ALL},
        ["bad-worker"],
        {"celery_worker_beat_schedule": {"tick": SCHEDULE["tick"] | {"queue": "beat"}}},
        ["beat, which no worker instance consumes"],
    ),
    (
        "routes differ between hosts",
        {
            "bad-worker": SERVES_ALL,
            "bad-worker2": SERVES_ALL | {"celery_worker_task_routes": {"taskapp.fetch_url": "cpu"}},
        },
        [],
        {},
        ["celery_worker_task_routes", "differ between hosts", "group_vars/celery_workers.yml"],
    ),
]


@pytest.mark.parametrize(
    ("workers", "beat", "group_vars", "expected"),
    [c[1:] for c in FLEET_CASES],
    ids=[c[0] for c in FLEET_CASES],
)
def test_bad_fleet_is_refused(
    tmp_path: Path,
    workers: dict[str, dict[str, Any]],
    beat: list[str],
    group_vars: dict[str, Any],
    expected: list[str],
) -> None:
    proc = run_validation(fleet_inventory(tmp_path, dict(workers), beat, group_vars))
    assert_refused(proc, expected)
