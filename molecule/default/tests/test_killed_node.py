"""A worker node killed mid-task (SIGKILL: the OOM killer, a crash in a C extension) gets its
task back when systemd restarts its unit, not after the visibility timeout (an hour here, the
default). The producer is plain Celery; the task is the user's app's own."""

from __future__ import annotations

import time

import redis
import testinfra
from celery import Celery
from celery.result import AsyncResult
from conftest import CONTROLLER_PORT

# The bound for a killed node's task to run again (p99), with the default visibility
# timeout of 3600 s. Without the restore on restart the task would wait out that hour.
REDELIVERED_WITHIN = 60
TASK_SECONDS = 5


def running_on(client: Celery, task_id: str, timeout: float) -> str:
    """The node (NAME@HOST) running task_id, once it runs."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for node, tasks in (client.control.inspect(timeout=2).active() or {}).items():
            if any(t["id"] == task_id for t in tasks):
                return str(node)
        time.sleep(0.5)
    raise AssertionError(f"task {task_id} was not running on any node within {timeout} s")


def test_a_killed_nodes_task_runs_again_when_its_unit_restarts(
    client: Celery, redis_password: str
) -> None:
    result: AsyncResult = client.send_task("textstats.tasks.wait", args=(TASK_SECONDS,))
    node = running_on(client, result.id, 30)
    name, hostname = node.split("@")
    host = testinfra.get_host(f"podman://{hostname}")
    unit = f"celery-worker@{name}"
    pid = host.check_output(f"systemctl show -p MainPID --value {unit}")
    host.check_output(f"kill -9 {pid}")
    killed = time.monotonic()

    assert result.get(timeout=REDELIVERED_WITHIN + TASK_SECONDS) == TASK_SECONDS
    assert time.monotonic() - killed < REDELIVERED_WITHIN + TASK_SECONDS
    # systemd restarted the unit (a new main process); its restore put the task back on its
    # queue, where any idle node may take it.
    assert host.check_output(f"systemctl show -p MainPID --value {unit}") != pid
    assert host.service(unit).is_running
    broker = redis.Redis(host="127.0.0.1", port=CONTROLLER_PORT, password=redis_password, db=0)
    assert broker.hlen("unacked") == 0
    broker.close()
