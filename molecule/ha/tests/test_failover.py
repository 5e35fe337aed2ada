"""A failover under a task stream: the master's host freezes (podman pause: no answer, no
goodbye) while the bundle's producer sends a task every 0.1 s through its config (durable
publish), the Sentinels promote a replica, and the worker follows without a restart. Counted
from the producer's side: every task it was told was accepted ran. A user's plain Celery
producer configured by hand works on the new master too, the old master comes back as a
replica, and a deploy afterwards keeps the master where Sentinel put it and restarts nothing.
The figures go to build/failover.json (RELIABILITY.md: `python -m chaos --failover
build/failover.json`)."""

from __future__ import annotations

import contextlib
import json
import shlex
import subprocess
import time
from collections.abc import Callable

from conftest import (
    PYTHON,
    REDIS,
    REPO,
    WORKER,
    address,
    cli,
    deploy,
    master,
    master_address,
    on,
    produce,
)

STREAM_SECONDS = 40
PAUSE_AFTER = 8
FIGURES = REPO / "build/failover.json"

# The bundle's producer: the workers' own config (Sentinels, TLS, durable publish), one
# record_work task per idempotency key every 0.1 s, until its time is up or OUT.stop exists;
# what each send answered, as JSON.
STREAM = r"""
import json, sys, time
from pathlib import Path
from celery import Celery
from rcbundle.config import celery_config, load_settings
seconds, label, out = float(sys.argv[1]), sys.argv[2], sys.argv[3]
app = Celery("stream")
app.config_from_object(celery_config(load_settings(Path("/etc/taskapp/config.toml"))))
sends, end, i = [], time.time() + seconds, 0
while time.time() < end and not Path(out + ".stop").exists():
    key, at = f"{label}-{i}", time.time()
    try:
        app.send_task("taskapp.record_work", args=[key], kwargs={"label": label},
                      ignore_result=True)
        sends.append([key, at, None])
    except Exception as exc:
        sends.append([key, at, f"{type(exc).__name__}: {exc}"[:200]])
    i += 1
    time.sleep(0.1)
Path(out + ".part").write_text(json.dumps(sends))
Path(out + ".part").rename(out)
"""


def wait_for(what: str, check: Callable[[], bool], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(1)
    raise AssertionError(f"{what}: not within {seconds} s")


def worker_pids() -> str:
    return str(on(WORKER).run("systemctl show -p MainPID --value 'celery-worker@*'").stdout)


def executions(label: str) -> list[dict[str, object]]:
    """record_work's entries for LABEL, read on the current master (result database 1)."""
    key = f"taskapp:taskapp-executions:{label}"
    lines = cli(master(), "-n", "1", "LRANGE", key, "0", "-1").splitlines()
    return [json.loads(line) for line in lines if line.startswith("{")]


def start_stream(seconds: float) -> tuple[str, str]:
    """The bundle's producer sending for SECONDS in the background on the worker host: its
    label (the tasks' record list) and the file its sends go to."""
    label = f"stream-{time.time_ns()}"
    out = f"/tmp/{label}.json"
    stream = shlex.join([PYTHON, "-c", STREAM, str(seconds), label, out])
    on(WORKER).run(f"nohup {stream} >/tmp/{label}.log 2>&1 &")
    return label, out


def finish_stream(label: str, out: str, seconds: float, since: float) -> dict[str, object]:
    """What the stream's sends answered and what ran, once every accepted task ran (or two
    minutes passed): sent, accepted, refused, lost, run twice, and the first task done after
    SINCE (a time.time())."""
    wait_for("the stream's end", lambda: on(WORKER).file(out).exists, seconds + 120)
    sends = json.loads(on(WORKER).file(out).content_string)
    accepted = {key for key, _, error in sends if error is None}
    refused = [error for _, _, error in sends if error is not None]

    def runs() -> dict[str, set[object]]:
        found: dict[str, set[object]] = {}
        for entry in executions(label):
            if entry["phase"] == "done":
                found.setdefault(str(entry["key"]), set()).add(entry["execution"])
        return found

    with contextlib.suppress(AssertionError):
        wait_for("every accepted task run", lambda: accepted <= runs().keys(), 120)
    ran = runs()
    done_at = [float(str(e["at"])) for e in executions(label) if e["phase"] == "done"]
    later = [at for at in done_at if at > since]
    return {
        "tasks_sent": len(sends),
        "tasks_accepted": len(accepted),
        "sends_refused": len(refused),
        "tasks_lost": len(accepted - ran.keys()),
        "tasks_run_twice": sum(1 for key in accepted if len(ran.get(key, ())) > 1),
        "first_task_after_seconds": round(min(later) - since, 1) if later else None,
        "refusals": sorted(set(refused))[:3],
    }


def test_a_failover_under_a_task_stream_loses_no_accepted_task() -> None:
    label, out = start_stream(STREAM_SECONDS)
    pids = worker_pids()
    time.sleep(PAUSE_AFTER)
    old = master()
    old_address = address(old)  # a paused container runs no command
    others = [host for host in REDIS if host != old]
    subprocess.run(["podman", "pause", old], check=True)
    paused_at = time.time()
    try:
        wait_for(
            "a replica promoted",
            lambda: all(master_address(host) not in ("", old_address) for host in others),
            60,
        )
        promoted_after = time.time() - paused_at
        figures = finish_stream(label, out, STREAM_SECONDS, paused_at)
        figures["promoted_after_seconds"] = round(promoted_after, 1)
        FIGURES.parent.mkdir(exist_ok=True)
        FIGURES.write_text(json.dumps({"master host frozen": figures}, indent=2) + "\n")
        print(f"failover under a stream: {figures}")
        assert figures["tasks_lost"] == 0, figures
        assert worker_pids() == pids  # followed, not restarted
        # A user's plain Celery producer, configured by hand, on the new master.
        after = produce(10)
        assert after["done"] == 10, after
    finally:
        subprocess.run(["podman", "unpause", old], check=True)
    wait_for("the old master back as a replica", lambda: cli(old, "ROLE").startswith("slave"), 60)
    wait_for(
        "the old master in sync",
        lambda: "master_link_status:up" in cli(old, "INFO", "replication"),
        60,
    )
    assert produce(5)["done"] == 5


def run_ids() -> dict[str, str]:
    return {
        host: next(
            line.split(":", 1)[1]
            for line in cli(host, "INFO", "server").splitlines()
            if line.startswith("run_id:")
        )
        for host in REDIS
    }


def replicaof_lines(host: str) -> list[str]:
    text = on(host).file("/etc/redis/redis-replicaof.conf").content_string
    return [line for line in text.splitlines() if line.startswith("replicaof")]


def test_a_deploy_after_the_failover_keeps_the_new_master() -> None:
    # The role asks Sentinel where the master is: each server's place and Sentinel's file
    # follow it, nothing restarts, and a second run changes nothing.
    now = master()
    assert now != REDIS[0]  # the failover above moved it
    before = run_ids()
    run = deploy()
    assert run.returncode == 0, run.stdout[-4000:]
    assert master() == now
    assert run_ids() == before
    for host in REDIS:
        assert replicaof_lines(host) == ([] if host == now else [f"replicaof {address(now)} 6379"])
    again = deploy()
    assert again.returncode == 0, again.stdout[-4000:]
    recap = again.stdout.split("PLAY RECAP")[-1]
    assert recap.count("changed=0") == len(REDIS) + 1, recap  # and the worker host
    assert produce(5)["done"] == 5
