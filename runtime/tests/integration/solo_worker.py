"""A real solo worker (rcbundle.solo, rcbundle.transport, rcbundle.loader) as the units run it.

Its app is a throwaway module written next to the test, not the repository's taskapp.
"""

import contextlib
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import redis
from celery import Celery

import rcbundle
from rcbundle.config import celery_config, load_settings
from testkit.loopback import RedisServer, stop, wait_until

APP = "soloapp"
BROKER_DB = 5  # apart from the other integration tests' databases
RESULT_DB = 6
KEY_PREFIX = "solotest:"
SOFT_LIMIT = 1
HARD_LIMIT = 2

APP_SOURCE = textwrap.dedent("""
    import time
    from pathlib import Path

    from celery import Celery

    app = Celery("soloapp")

    @app.task(name="soloapp.deaf")
    def deaf(log):
        # Counts its deliveries, then swallows every limit.
        with Path(log).open("a") as out:
            out.write("delivered\\n")
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                time.sleep(10)
            except Exception:
                pass

    @app.task(name="soloapp.echo")
    def echo(value):
        return value

    @app.task(name="soloapp.hold")
    def hold(log, release):
        # Counts its deliveries, then runs until the file release exists.
        with Path(log).open("a") as out:
            out.write("delivered\\n")
        deadline = time.monotonic() + 120
        while not Path(release).exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        return "released"
""")


@dataclass(frozen=True)
class SoloSetup:
    server: RedisServer
    workdir: Path
    config: Path

    def client(self) -> Celery:
        return Celery("solotest-client", config_source=celery_config(load_settings(self.config)))

    def admin(self) -> redis.Redis:
        return self.server.client(self.server.password, BROKER_DB)

    def env(self, **extra: str) -> dict[str, str]:
        # The rcbundle this test imported, and the throwaway app, on the worker's path.
        src = str(Path(rcbundle.__file__).parents[1])
        path = os.pathsep.join([str(self.workdir), src, os.environ.get("PYTHONPATH", "")])
        env = {k: v for k, v in os.environ.items() if k != "NOTIFY_SOCKET"}
        env["PYTHONPATH"] = path.rstrip(os.pathsep)
        # What a solo node's unit sets.
        env["RCBUNDLE_CONFIG"] = str(self.config)
        env["CELERY_LOADER"] = "rcbundle.loader:Loader"
        env["CELERY_CUSTOM_WORKER_POOL"] = "rcbundle.solo:TaskPool"
        return env | extra


def prepare(
    server: RedisServer, workdir: Path, soft_limit: int = SOFT_LIMIT, hard_limit: int = HARD_LIMIT
) -> SoloSetup:
    """The app module and the config file the role would write; both databases emptied."""
    (workdir / f"{APP}.py").write_text(APP_SOURCE)
    config = workdir / "soloapp.toml"
    # A JSON string is a valid TOML basic string, escapes included.
    config.write_text(
        "[redis]\n"
        'host = "127.0.0.1"\n'
        f"port = {server.port}\n"
        f"password = {json.dumps(server.password)}\n"
        f"broker_db = {BROKER_DB}\n"
        f"result_db = {RESULT_DB}\n"
        f"key_prefix = {json.dumps(KEY_PREFIX)}\n"
        "[celery]\n"
        f"task_soft_time_limit = {soft_limit}\n"
        f"task_time_limit = {hard_limit}\n"
    )
    for db in (BROKER_DB, RESULT_DB):
        server.client(server.password, db).flushdb()
    return SoloSetup(server, workdir, config)


@contextlib.contextmanager
def run_worker(
    setup: SoloSetup, name: str, log: Path, env: dict[str, str] | None = None, pool: str = "custom"
) -> Iterator[subprocess.Popen[bytes]]:
    """`celery worker --pool custom` as a solo node's unit starts it (or another pool, one
    process); stopped with SIGTERM."""
    command = [sys.executable, "-m", "celery", "--app", f"{APP}:app", "worker"]
    command += ["--pool", pool, "--hostname", name, "--loglevel", "INFO"]
    if pool != "custom":
        command += ["--concurrency", "1"]
    command += ["--queues", "celery"]
    with log.open("ab") as out:
        proc = subprocess.Popen(
            command,
            env=env or setup.env(),
            cwd=setup.workdir,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield proc
    finally:
        stop(proc, timeout=20)


def wait_consuming(setup: SoloSetup, client: Celery, name: str, proc: subprocess.Popen[bytes],
                   log: Path) -> None:  # fmt: skip
    wait_until(
        "worker",
        lambda: bool(client.control.ping(destination=[name], timeout=0.5)),
        proc,
        log,
    )
