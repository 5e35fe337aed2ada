"""A worker node killed mid-task (SIGKILL: the OOM killer, a crash in a C extension) gets its
task back when systemd restarts its unit, not after the visibility timeout (an hour here, the
default). The producer is plain Celery; the task is the user's app's own.

The node killed is one of worker1's solo nodes, a single process. A prefork node's children
outlive their parent until they notice it is gone, and systemd restarts a unit only once its
cgroup is empty; inside these test containers (cgroup v1) systemd is never told that, and waits
out TimeoutStopSec (over six minutes here) before restarting a prefork node.
"""

from __future__ import annotations

import json
import time

import redis
import testinfra
from celery import Celery
from celery.result import AsyncResult
from conftest import CONTROLLER_PORT

WORKER1 = "mol-default-worker1"

# The bound for a killed node's task to run again (p99), with the default visibility
# timeout of 3600 s. Without the restore on restart the task would wait out that hour.
REDELIVERED_WITHIN = 60
TASK_SECONDS = 5


def fetched_by(broker: redis.Redis, task_id: str, timeout: float) -> str:
    """The node (NAME@HOST) that fetched task_id, as the transport recorded it in Redis.

    A solo node running a task cannot answer `celery inspect active`: kombu's `unacked` hash
    holds the message (its headers name the task), and rcbundle's `unacked_owner` its fetcher.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for tag, entry in broker.hgetall("unacked").items():
            if json.loads(entry)[0]["headers"]["id"] == task_id:
                owner = broker.hget("unacked_owner", tag)
                assert owner, f"no owner recorded for {task_id}"
                return owner.decode()
        time.sleep(0.2)
    raise AssertionError(f"task {task_id} was not fetched by any node within {timeout} s")


def test_a_killed_nodes_task_runs_again_when_its_unit_restarts(
    client: Celery, redis_password: str
) -> None:
    # Only worker1's solo nodes consume the task's queue during the test.
    nodes = [node for reply in client.control.ping(timeout=5) for node in reply]
    others = [node for node in nodes if not node.endswith("@" + WORKER1)]
    assert others, "worker2's node did not answer"
    client.control.cancel_consumer("celery", destination=others, reply=True)
    try:
        kill_and_wait(client, redis_password)
    finally:
        client.control.add_consumer("celery", destination=others, reply=True)


def kill_and_wait(client: Celery, redis_password: str) -> None:
    broker = redis.Redis(host="127.0.0.1", port=CONTROLLER_PORT, password=redis_password, db=0)
    result: AsyncResult = client.send_task("textstats.tasks.wait", args=(TASK_SECONDS,))
    node = fetched_by(broker, result.id, 30)
    assert node.endswith("@" + WORKER1), node
    time.sleep(1)  # running: a solo node of prefetch 1 starts what it fetched at once
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
    assert broker.hlen("unacked") == 0
    assert broker.hlen("unacked_owner") == 0
    broker.close()
