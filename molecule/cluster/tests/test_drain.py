"""The drain playbook empties a host without losing the task it was running."""

from __future__ import annotations

import time

import pytest
from celery import Celery
from conftest import assert_ok, deploy, on, wait_started

TIMEOUT = 90


@pytest.mark.usefixtures("cpu_host_serving")
def test_drain_waits_for_the_running_task_then_stops_the_host(client: Celery) -> None:
    # worker2 is the scenario's CPU-only host; send sleeps until one runs there.
    deadline = time.monotonic() + TIMEOUT
    target = "cpu@mol-cluster-worker2"
    running = None
    while running is None and time.monotonic() < deadline:
        result = client.send_task("taskapp.sleep", args=(10,))
        if wait_started(result, deadline) == target:
            running = result
    assert running is not None

    proc = deploy("playbooks/drain.yml", "--limit", "mol-cluster-worker2", timeout=300)
    assert_ok(proc)
    assert "drained, no task running" in proc.stdout, proc.stdout[-4000:]
    assert running.get(timeout=TIMEOUT) == 10.0
    assert str(running.worker) == target
    assert on("mol-cluster-worker2", "systemctl is-active celery-worker@cpu || true").strip() in (
        "inactive",
        "failed",
    )
    assert on("mol-cluster-worker2", "systemctl is-enabled celery-worker@cpu || true").strip() == (
        "disabled"
    )
    # The fleet still serves cpu tasks: worker1 took them over.
    assert client.send_task("taskapp.process_data", args=([1.0],)).get(timeout=TIMEOUT)


def test_drain_refuses_to_run_on_the_whole_fleet() -> None:
    proc = deploy("playbooks/drain.yml", timeout=120)
    assert proc.returncode != 0
    assert "--limit" in proc.stdout
