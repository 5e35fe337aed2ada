"""An instance removed from a host's inventory is stopped and its unit removed on next deploy."""

from __future__ import annotations

import json

import pytest
from celery import Celery
from conftest import CPU_HOST, assert_ok, deploy, on

TIMEOUT = 90
HOST = CPU_HOST


@pytest.mark.usefixtures("cpu_host_deployed")
def test_removed_instance_is_stopped_and_its_unit_removed(client: Celery) -> None:
    # worker2's inventory now lists cpu2 instead of cpu (running, or drained by test_drain).
    instances = [{"name": "cpu2", "queues": ["celery", "cpu"], "pool": "prefork", "concurrency": 1}]
    proc = deploy(
        "deploy.yml",
        "--limit",
        HOST,
        "-e",
        json.dumps({"celery_worker_instances": instances}),
    )
    assert_ok(proc)

    state = on(HOST, "systemctl is-active celery-worker@cpu || true").strip()
    assert state in ("inactive", "failed"), state
    assert on(HOST, "systemctl is-enabled celery-worker@cpu || true").strip() != "enabled"
    dropin = "/etc/systemd/system/celery-worker@cpu.service.d"
    assert on(HOST, f"test -e {dropin} && echo present || echo absent").strip() == "absent"
    assert on(HOST, "systemctl is-active celery-worker@cpu2").strip() == "active"
    # The new instance consumes: a cpu task reaches it (worker1 serves cpu too).
    seen: set[str] = set()
    for _ in range(10):
        batch = [client.send_task("taskapp.process_data", args=([i, 2.0],)) for i in range(4)]
        seen |= {str(r.get(timeout=TIMEOUT) and r.worker) for r in batch}
        if f"cpu2@{HOST}" in seen:
            break
    assert f"cpu2@{HOST}" in seen, seen
