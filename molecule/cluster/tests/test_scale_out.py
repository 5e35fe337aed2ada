"""Scale out by editing the inventory: the new host consumes, the others are not restarted."""

from __future__ import annotations

import time

from celery import Celery
from conftest import SPARE, ScaleOut, assert_ok, invocation, on

TIMEOUT = 60


def test_a_host_added_to_the_inventory_serves_and_others_stay_up(
    client: Celery, scaled_out: ScaleOut
) -> None:
    # The deploy with the spare host in the inventory: the fixture scaled_out.
    assert_ok(scaled_out.proc)

    assert {u: invocation(*u) for u in scaled_out.before} == scaled_out.before
    assert on(SPARE, "systemctl is-active celery-worker@io").strip() == "active"
    # io is now served by two hosts: a stream of io tasks reaches the new one within seconds.
    deadline = time.monotonic() + TIMEOUT
    seen: set[str] = set()
    while f"io@{SPARE}" not in seen and time.monotonic() < deadline:
        batch = [client.send_task("taskapp.record", args=("scale",)) for _ in range(6)]
        seen |= {str(r.get(timeout=TIMEOUT) and r.worker) for r in batch}
    assert f"io@{SPARE}" in seen, seen
