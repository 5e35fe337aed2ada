"""Accepted means replicated: with both replicas frozen, a send through the bundle's config
(rcbundle_publish_replicas 1: WAIT after the publish) fails instead of being accepted by a master
that would lose it, and once no replica has answered for min-replicas-max-lag seconds the master
refuses every client's writes, a plain Celery producer's too. Thawed, both send again."""

from __future__ import annotations

import shlex
import subprocess
import time

from conftest import PYTHON, REDIS, WORKER, master, on, produce

# The bundle's own producer: the workers' config file, read by rcbundle. One send, no retry.
BUNDLE_PRODUCER = r"""
import sys
from pathlib import Path
from celery import Celery
from rcbundle.config import celery_config, load_settings
app = Celery("bundle-producer")
app.config_from_object(celery_config(load_settings(Path("/etc/taskapp/config.toml"))))
try:
    app.send_task("taskapp.ping", retry=False)
except Exception as exc:
    print(f"refused: {type(exc).__name__}: {exc}")
    sys.exit(0)
print("accepted")
"""


def bundle_send() -> str:
    result = on(WORKER).run(shlex.join([PYTHON, "-c", BUNDLE_PRODUCER]))
    assert result.rc == 0, result.stdout + result.stderr
    return str(result.stdout).strip().splitlines()[-1]


def test_the_config_asks_for_one_replica() -> None:
    config = on(WORKER).file("/etc/taskapp/config.toml").content_string
    assert "publish_replicas = 1" in config
    assert bundle_send() == "accepted"


def test_without_a_replica_a_send_is_refused_not_accepted() -> None:
    replicas = [host for host in REDIS if host != master()]
    subprocess.run(["podman", "pause", *replicas], check=True)
    try:
        paused = time.monotonic()
        answer = bundle_send()
        assert answer.startswith("refused: "), answer
        assert "reached 0 of the 1 replicas" in answer
        # min-replicas-max-lag (10 s) later the master refuses writes from anyone.
        time.sleep(max(0.0, 12 - (time.monotonic() - paused)))
        plain = produce(1)
        assert plain["done"] == 0, plain
        assert any("NOREPLICAS" in str(error) for error in plain["errors"]), plain  # type: ignore[attr-defined]
    finally:
        subprocess.run(["podman", "unpause", *replicas], check=True)
    time.sleep(3)
    assert bundle_send() == "accepted"
    assert produce(3)["done"] == 3
