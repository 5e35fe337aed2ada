"""Each host runs the instances its inventory declares: units, pools, queues, routing, beat."""

from __future__ import annotations

import itertools
import json
import time

import pytest
from celery import Celery
from conftest import CELERY, WORKERS, instances, on

TIMEOUT = 60
UNITS = [(h, i["name"]) for h in WORKERS for i in instances(h)]

pytestmark = pytest.mark.usefixtures("fleet_as_converged")


@pytest.mark.parametrize(("host", "name"), UNITS)
def test_unit_is_a_hardened_notify_service(host: str, name: str) -> None:
    props = on(
        host,
        f"systemctl show celery-worker@{name} -p ActiveState -p UnitFileState -p Type -p User "
        "-p KillMode -p TimeoutStopUSec -p Restart -p StandardOutput",
    )
    for expected in [
        "ActiveState=active",
        "UnitFileState=enabled",
        "Type=notify",
        "User=taskapp",
        "KillMode=mixed",
        "Restart=on-failure",
        "StandardOutput=journal",
        # hard time limit 60 + soft shutdown 10 + margin 10 (group_vars)
        "TimeoutStopUSec=1min 20s",
    ]:
        assert expected in props, props
    out = on(host, f"systemd-analyze security --no-pager celery-worker@{name}.service")
    assert float(out.strip().splitlines()[-1].split()[-3]) <= 2.5, out


def test_memory_max_from_the_inventory() -> None:
    assert on("mol-cluster-worker2", "systemctl show -p MemoryMax --value celery-worker@cpu") == (
        f"{512 * 1024 * 1024}\n"
    )


@pytest.mark.parametrize("host", WORKERS)
def test_pool_sizes_and_queues_match_the_inventory(host: str) -> None:
    for inst in instances(host):
        worker = f"{inst['name']}@{host}"
        stats = json.loads(
            on(host, f"{CELERY} inspect stats --json --timeout 10 --destination {worker}")
        )[worker]
        assert stats["pool"]["max-concurrency"] == inst["concurrency"], stats["pool"]
        pool = {"prefork": "celery.concurrency.prefork", "threads": "celery.concurrency.thread"}
        assert stats["pool"]["implementation"].startswith(pool[inst["pool"]]), stats["pool"]
        if "max_tasks_per_child" in inst:
            assert stats["pool"]["max-tasks-per-child"] == inst["max_tasks_per_child"]
        queues = json.loads(
            on(host, f"{CELERY} inspect active_queues --json --timeout 10 --destination {worker}")
        )[worker]
        assert sorted(q["name"] for q in queues) == sorted(inst["queues"])


def test_tasks_run_only_on_hosts_serving_their_queue(client: Celery) -> None:
    sent = {
        "cpu": [client.send_task("taskapp.process_data", args=([i, 1.0],)) for i in range(8)],
        "io": [client.send_task("taskapp.record", args=("routing",)) for _ in range(8)],
        "celery": [client.send_task("taskapp.ping") for _ in range(8)],
    }
    serving = {
        queue: {f"{i['name']}@{h}" for h in WORKERS for i in instances(h) if queue in i["queues"]}
        for queue in sent
    }
    for queue, results in sent.items():
        ran_on = set()
        for result in results:
            result.get(timeout=TIMEOUT)
            ran_on.add(str(result.worker))
        assert ran_on <= serving[queue], (queue, ran_on)
    assert serving["io"] == {"io@mol-cluster-worker1"}


def test_beat_runs_on_one_host_only() -> None:
    assert on("mol-cluster-worker1", "systemctl is-active celery-beat").strip() == "active"
    assert "celery-beat" not in on("mol-cluster-worker2", "systemctl list-units --all --no-legend")
    out = on("mol-cluster-worker1", "systemd-analyze security --no-pager celery-beat.service")
    assert float(out.strip().splitlines()[-1].split()[-3]) <= 2.5, out


def test_periodic_task_fires_once_per_interval(client: Celery) -> None:
    # The schedule (group_vars): taskapp.record every 5 s; it appends one entry per execution.
    redis = client.backend.client  # type: ignore[attr-defined]
    key = "taskapp-executions:beat"
    start = redis.llen(key)
    time.sleep(21)
    entries = [json.loads(e) for e in redis.lrange(key, start, -1)]
    # 21 s at one run per 5 s: 4 or 5 runs. Two beats would give 8 to 10.
    assert 3 <= len(entries) <= 5, entries
    times = sorted(e["at"] for e in entries)
    assert all(b - a > 3 for a, b in itertools.pairwise(times)), times
