"""A real solo node (rcbundle.solo + rcbundle.transport) against a real redis-server."""

import signal
import socket
import uuid
from pathlib import Path

import pytest
from celery.exceptions import TimeLimitExceeded

from rcbundle import solo
from testkit.loopback import RedisServer
from tests.integration.solo_worker import (
    BROKER_DB,
    KEY_PREFIX,
    prepare,
    run_worker,
    wait_consuming,
)

pytestmark = pytest.mark.integration

EXIT_SECONDS = 60  # the task's hard limit plus HARD_EXIT_GRACE, with a wide margin
STARTUP_SECONDS = 30


def test_a_task_that_swallows_every_limit_fails_and_is_not_delivered_again(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    setup = prepare(redis_server, tmp_path)
    admin = setup.admin()
    client = setup.client()
    deliveries = tmp_path / "deliveries.txt"
    log = tmp_path / "worker.log"
    try:
        with run_worker(setup, "solo1@itest", log) as proc:
            wait_consuming(setup, client, "solo1@itest", proc, log)
            result = client.send_task("soloapp.deaf", args=[str(deliveries)])
            assert proc.wait(EXIT_SECONDS) == solo.EXIT_STATUS, log.read_text()

        # Recorded as prefork records a hard time-out, and acknowledged before the node ended.
        assert result.state == "FAILURE", log.read_text()
        assert isinstance(result.result, TimeLimitExceeded)
        assert admin.hlen(KEY_PREFIX + "unacked") == 0
        assert admin.zcard(KEY_PREFIX + "unacked_index") == 0
        assert admin.llen(KEY_PREFIX + "celery") == 0

        # What systemd does next: the node starts again, and consumes what comes after.
        with run_worker(setup, "solo1@itest", log) as proc:
            wait_consuming(setup, client, "solo1@itest", proc, log)
            assert client.send_task("soloapp.echo", args=["after"]).get(timeout=30) == "after"
        assert proc.returncode == 0, log.read_text()
        assert deliveries.read_text().splitlines() == ["delivered"]
    finally:
        client.close()


def test_a_worker_tells_systemd_it_is_ready_once_it_has_connected_and_that_it_stops(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    setup = prepare(redis_server, tmp_path)
    admin = setup.admin()
    client = setup.client()
    log = tmp_path / "worker.log"
    name = f"rcbundle-itest-{uuid.uuid4().hex}"
    before = {c["id"] for c in admin.client_list()}
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
            notify.bind("\0" + name)  # systemd's socket exists before the unit starts
            notify.settimeout(STARTUP_SECONDS)
            env = setup.env(NOTIFY_SOCKET="@" + name)
            with run_worker(setup, "solo2@itest", log, env) as proc:
                assert notify.recv(4096) == b"READY=1", log.read_text()
                # Sent once the node had connected: its connections to the broker are there...
                assert [
                    c
                    for c in admin.client_list()
                    if c["id"] not in before and c["db"] == str(BROKER_DB)
                ], log.read_text()
                # ...and it answers, as a consuming node does.
                assert client.control.ping(destination=["solo2@itest"], timeout=5)

                proc.send_signal(signal.SIGTERM)  # what systemctl stop sends (KillMode=mixed)
                assert notify.recv(4096) == b"STOPPING=1", log.read_text()
                assert proc.wait(30) == 0, log.read_text()
    finally:
        client.close()
