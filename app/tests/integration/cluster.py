"""A real redis-server and a real prefork worker, each stopped on exit even when a test fails."""

import contextlib
import json
import os
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from celery import Celery

from rcbundle.config import celery_config, load_settings
from testkit.loopback import RedisServer, stop, wait_until

KEY_PREFIX = "itest:"
WORKER_NAME = "itest"
ROUTES = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())["tool"][
    "rcbundle"
]["task_routes"]


@dataclass(frozen=True)
class Cluster:
    redis: RedisServer
    env: dict[str, str]
    client: Celery


@contextlib.contextmanager
def run_worker(server: RedisServer, workdir: Path) -> Iterator[Cluster]:
    config = workdir / "taskapp.toml"
    # A JSON string is a valid TOML basic string, escapes included.
    config.write_text(
        "[redis]\n"
        'host = "127.0.0.1"\n'
        f"port = {server.port}\n"
        f"password = {json.dumps(server.password)}\n"
        f"key_prefix = {json.dumps(KEY_PREFIX)}\n"
        # What the celery_worker role writes from the app's [tool.rcbundle] routes.
        "[celery.task_routes]\n"
        + "".join(f"{json.dumps(task)} = {json.dumps(queue)}\n" for task, queue in ROUTES.items())
    )
    # As the worker units run it: rcbundle's loader gives the app the deployed settings.
    env = {**os.environ, "RCBUNDLE_CONFIG": str(config), "CELERY_LOADER": "rcbundle.loader:Loader"}
    client = Celery("itest-client", config_source=celery_config(load_settings(config)))
    log = workdir / "worker.log"
    command = [sys.executable, "-m", "celery", "--app", "taskapp.app:app", "worker"]
    command += ["--pool", "prefork", "--concurrency", "2", "--hostname", f"{WORKER_NAME}@%h"]
    # The default queue and the queues of the routes in pyproject.toml ([tool.rcbundle]).
    command += ["--loglevel", "INFO", "--queues", "celery,cpu,io"]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        wait_until("worker", lambda: bool(client.control.ping(timeout=0.5)), proc, log)
        yield Cluster(server, env, client)
    finally:
        stop(proc, timeout=20)  # SIGTERM: the warm shutdown systemd's KillMode=mixed gives
        client.close()
