"""systemctl stop during a long task: a warm shutdown, the task completes on the same worker."""

from __future__ import annotations

import time

from celery import Celery
from conftest import CELERY, on, wait_started

TIMEOUT = 60


def test_stop_during_a_long_task_lets_it_finish(client: Celery) -> None:
    result = client.send_task("taskapp.sleep", args=(12,))
    worker = wait_started(result, time.monotonic() + TIMEOUT)
    name, host = worker.split("@")
    since = on(host, "date '+%Y-%m-%d %H:%M:%S'").strip()
    try:
        # Blocks until the unit has stopped: the warm shutdown waits for the task.
        on(host, f"systemctl stop celery-worker@{name}", timeout=120)
        assert result.get(timeout=TIMEOUT) == 12.0
        assert str(result.worker) == worker
        journal = on(host, f"journalctl -u celery-worker@{name} --since '{since}' --no-pager")
        assert "WorkerLostError" not in journal, journal
        assert "warm shutdown" in journal.lower(), journal
    finally:
        on(host, f"systemctl start celery-worker@{name}")
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            if worker in on(host, f"{CELERY} inspect ping --timeout 3 -d {worker} || true"):
                break
            time.sleep(1)
