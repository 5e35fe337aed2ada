"""A task sent from the controller comes back from a worker, in bounded time."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

# Redis's port as published on the controller's loopback by molecule.yml.
CONTROLLER_PORT = 16390


@pytest.fixture(scope="module")
def controller_config(tmp_path_factory: pytest.TempPathFactory, redis_password: str) -> Path:
    path = tmp_path_factory.mktemp("controller") / "config.toml"
    path.write_text(
        f'[redis]\nhost = "127.0.0.1"\nport = {CONTROLLER_PORT}\npassword = "{redis_password}"\n'
    )
    return path


def test_smoke_from_the_controller(controller_config: Path) -> None:
    env = {**os.environ, "RCBUNDLE_CONFIG": str(controller_config)}
    proc = subprocess.run(
        [sys.executable, "-m", "taskapp", "smoke", "--count", "10", "--timeout", "60"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "11 passed, 0 failed" in proc.stdout, proc.stdout
    workers = {line.split()[3] for line in proc.stdout.splitlines() if "SUCCESS" in line}
    # worker1 runs one node per vCPU (default, default-2, ...), worker2 one node.
    assert all(
        w.endswith("@mol-default-worker1") for w in workers - {"default@mol-default-worker2"}
    )
    assert all(re.fullmatch(r"default(-\d+)?", w.split("@")[0]) for w in workers), workers


def test_both_workers_answer_from_the_controller(controller_config: Path) -> None:
    env = {**os.environ, "RCBUNDLE_CONFIG": str(controller_config)}
    out = subprocess.run(
        [sys.executable, "-m", "taskapp", "ping-workers"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert "default@mol-default-worker1" in out
    assert "default@mol-default-worker2" in out


def test_unauthenticated_controller_is_refused() -> None:
    import redis

    client = redis.Redis(host="127.0.0.1", port=CONTROLLER_PORT, socket_timeout=5)
    with pytest.raises(redis.exceptions.AuthenticationError):
        client.ping()


def test_the_soft_time_limit_ends_tasks_on_solo_and_prefork_nodes(controller_config: Path) -> None:
    # worker1's nodes are solo (celery_solo_limits.py), worker2's is prefork: both enforce it.
    # The hard limit's own path (a task that ignores the soft one) is in tests/test_solo_limits.py:
    # the bundled app has no task that ignores SoftTimeLimitExceeded.
    from celery import Celery

    from rcbundle.config import celery_config, load_settings

    client = Celery("limits", config_source=celery_config(load_settings(controller_config)))
    try:
        results = [
            client.send_task("taskapp.sleep", args=(60,), soft_time_limit=1) for _ in range(6)
        ]
        ended_on = set()
        for result in results:
            result.get(timeout=30, propagate=False)
            assert result.state == "FAILURE", (result.state, result.result)
            assert type(result.result).__name__ == "SoftTimeLimitExceeded", repr(result.result)
            ended_on.add(str(result.worker).split("@")[1])
        assert ended_on == {"mol-default-worker1", "mol-default-worker2"}, ended_on
        # The nodes whose task was ended are still there, and serve the next task.
        assert client.send_task("taskapp.ping").get(timeout=30) == "pong"
        answering = {n for reply in client.control.ping(timeout=3) for n in reply}
        assert {"default@mol-default-worker1", "default@mol-default-worker2"} <= answering
    finally:
        client.close()
