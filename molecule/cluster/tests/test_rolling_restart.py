"""A configuration change restarts the fleet host by host while tasks flow: nothing lost."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from celery import Celery
from conftest import SCALE_OUT, SPARE, WORKERS, assert_ok, deploy, instances, invocation

QUEUES = ("celery", "cpu", "io")
TIMEOUT = 120


def consumers(client: Celery) -> dict[str, int]:
    replies = client.control.inspect(timeout=2).active_queues() or {}
    return {q: sum(q in {x["name"] for x in qs} for qs in replies.values()) for q in QUEUES}


@pytest.mark.usefixtures("scaled_out")  # the fleet of three hosts
def test_rolling_restart_keeps_every_queue_served_and_loses_nothing(client: Celery) -> None:
    hosts = [*WORKERS, SPARE]
    units = [(h, f"celery-worker@{i['name']}") for h in hosts for i in instances(h)]
    # Beat runs the same configuration: it restarts with the workers.
    units.append(("mol-cluster-worker1", "celery-beat"))
    before = {u: invocation(*u) for u in units}
    stop = threading.Event()
    sent: list[Any] = []
    lowest = dict.fromkeys(QUEUES, 99)

    def produce() -> None:
        i = 0
        while not stop.is_set():
            sent.append(client.send_task("taskapp.process_data", args=([i, 0.5],)))
            sent.append(client.send_task("taskapp.record", args=("stream",)))
            sent.append(client.send_task("taskapp.ping"))
            i += 1
            time.sleep(0.3)

    def watch() -> None:
        while not stop.is_set():
            seen = consumers(client)
            if min(seen.values()) == 0:
                seen = consumers(client)  # a reply slow under load is not a missing consumer
            for q in QUEUES:
                lowest[q] = min(lowest[q], seen[q])
            time.sleep(0.5)

    threads = [threading.Thread(target=produce), threading.Thread(target=watch)]
    for t in threads:
        t.start()
    try:
        proc = deploy(
            "deploy.yml",
            "-i",
            str(SCALE_OUT),
            "--tags",
            "celery_worker",
            "-e",
            '{"celery_worker_result_expires": 86399}',  # JSON: key=value is a string
        )
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)
    assert_ok(proc)
    # Every unit was restarted, one host at a time (serial), by this change.
    assert all(invocation(*u) != before[u] for u in units)

    deadline = time.monotonic() + TIMEOUT
    for result in sent:
        result.get(timeout=max(1.0, deadline - time.monotonic()), propagate=False)
    states = [r.state for r in sent]
    assert len(sent) > 30
    assert states.count("SUCCESS") == len(sent), {s: states.count(s) for s in set(states)}
    assert min(lowest.values()) >= 1, lowest
