"""A killed worker node gets its messages back when it starts again (rcbundle_owner).

Real `celery worker` processes on rcbundle's loader, as the celery_worker role's units run them,
on the prefork pool: its pool process is forked after the loader named the node and while the
node's consumer runs. A node is killed as systemd kills a unit's cgroup: every process at once.
"""

import os
import signal
import time
from pathlib import Path

import pytest

from rcbundle.config import OWNER_OPTION
from testkit.loopback import RedisServer
from tests.integration.solo_worker import KEY_PREFIX, prepare, run_worker, wait_consuming

pytestmark = pytest.mark.integration

OWNERS = KEY_PREFIX + "unacked_owner"
UNACKED = KEY_PREFIX + "unacked"
NODE, OTHER = "owner1@itest", "owner2@itest"
BACK_WITHIN = 10  # seconds from the restarted node answering; the visibility timeout is 3600


def _deliveries(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


def _wait(what: str, ready: object, seconds: float, log: Path) -> None:
    assert callable(ready)
    deadline = time.monotonic() + seconds
    while not ready():
        assert time.monotonic() < deadline, f"not within {seconds} s: {what}\n{log.read_text()}"
        time.sleep(0.05)


def test_a_killed_node_gets_its_task_back_on_restart_and_no_other_node_takes_it(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    setup = prepare(redis_server, tmp_path, soft_limit=100, hard_limit=110)
    admin = setup.admin()
    client = setup.client()
    deliveries, release = tmp_path / "deliveries.txt", tmp_path / "release"
    log = tmp_path / "worker.log"
    try:
        # A producer has no owner, and publishing records none.
        assert OWNER_OPTION not in client.conf.broker_transport_options
        echoed = client.send_task("soloapp.echo", args=["before"])
        held = client.send_task("soloapp.hold", args=[str(deliveries), str(release)])
        assert admin.exists(OWNERS) == 0

        with run_worker(setup, NODE, log, pool="prefork") as proc:
            wait_consuming(setup, client, NODE, proc, log)
            assert echoed.get(timeout=30) == "before"
            _wait("the long task started", lambda: _deliveries(deliveries) == 1, 30, log)
            # Held by this node, recorded under its name; the acknowledged echo left nothing.
            assert admin.hlen(UNACKED) == 1
            assert list(admin.hvals(OWNERS)) == [NODE]
            os.killpg(proc.pid, signal.SIGKILL)  # systemd: every process of the unit's cgroup
            proc.wait(10)
        assert admin.hlen(UNACKED) == 1

        with run_worker(setup, OTHER, log, pool="prefork") as proc:
            wait_consuming(setup, client, OTHER, proc, log)
            time.sleep(3)
            assert _deliveries(deliveries) == 1, "another node took the killed node's task"
            assert list(admin.hvals(OWNERS)) == [NODE]

        with run_worker(setup, NODE, log, pool="prefork") as proc:
            wait_consuming(setup, client, NODE, proc, log)
            _wait("the task delivered again", lambda: _deliveries(deliveries) == 2,
                  BACK_WITHIN, log)  # fmt: skip
            assert list(admin.hvals(OWNERS)) == [NODE]
            release.touch()
            assert held.get(timeout=30) == "released"
            _wait("the acknowledgement", lambda: admin.hlen(UNACKED) == 0, 10, log)
            assert admin.exists(OWNERS) == 0
        assert proc.returncode == 0, log.read_text()
        assert "went back to their queues" in log.read_text()
    finally:
        client.close()
