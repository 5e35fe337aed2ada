"""A real solo node (rcbundle.solo + rcbundle.transport) against a real redis-server."""

from pathlib import Path

import pytest
from celery.exceptions import TimeLimitExceeded

from rcbundle import solo
from tests.integration.redis_server import RedisServer
from tests.integration.solo_worker import KEY_PREFIX, prepare, run_worker, wait_consuming

pytestmark = pytest.mark.integration

EXIT_SECONDS = 60  # the task's hard limit plus HARD_EXIT_GRACE, with a wide margin


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
