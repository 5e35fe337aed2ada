"""Scale out by editing the inventory: the new host consumes, the others are not restarted."""

from __future__ import annotations

import time

from celery import Celery
from conftest import SCENARIO, SPARE, WORKERS, deploy, instances, invocation, on

TIMEOUT = 60


def test_a_host_added_to_the_inventory_serves_and_others_stay_up(client: Celery) -> None:
    units = [(h, f"celery-worker@{i['name']}") for h in WORKERS for i in instances(h)]
    units.append(("mol-cluster-worker1", "celery-beat"))
    before = {(h, u): invocation(h, u) for h, u in units}

    proc = deploy("deploy.yml", "-i", str(SCENARIO / "inventory/scale-out.yml"))
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]

    assert {(h, u): invocation(h, u) for h, u in units} == before
    assert on(SPARE, "systemctl is-active celery-worker@io").strip() == "active"
    # io is now served by two hosts: a stream of io tasks reaches the new one within seconds.
    deadline = time.monotonic() + TIMEOUT
    seen: set[str] = set()
    while f"io@{SPARE}" not in seen and time.monotonic() < deadline:
        batch = [client.send_task("taskapp.record", args=("scale",)) for _ in range(6)]
        seen |= {str(r.get(timeout=TIMEOUT) and r.worker) for r in batch}
    assert f"io@{SPARE}" in seen, seen
