"""A failover under a task stream: the master's host freezes (podman pause: no answer, no
goodbye) while the bundle's producer sends a task every 0.1 s through its config (durable
publish), the Sentinels promote a replica, and the worker follows without a restart. Counted
from the producer's side: every task it was told was accepted ran. A user's plain Celery
producer configured by hand works on the new master too, the old master comes back as a
replica, the promoted master restarted before any deploy comes back the master, and a deploy
afterwards keeps the master where Sentinel put it and restarts nothing.
The figures go to build/failover.json (RELIABILITY.md: `python -m chaos --failover
build/failover.json`)."""

from __future__ import annotations

import subprocess
import time

from conftest import (
    REDIS,
    address,
    cli,
    deploy,
    finish_stream,
    healthy,
    master,
    on,
    produce,
    record_figures,
    run_ids,
    start_stream,
    wait_for,
    wait_promoted,
    worker_pids,
)

STREAM_SECONDS = 40
PAUSE_AFTER = 8


def test_a_failover_under_a_task_stream_loses_no_accepted_task() -> None:
    label, out = start_stream(STREAM_SECONDS)
    pids = worker_pids()
    time.sleep(PAUSE_AFTER)
    old = master()
    old_address = address(old)  # a paused container runs no command
    subprocess.run(["podman", "pause", old], check=True)
    paused_at = time.time()
    try:
        promoted_after = wait_promoted(old, old_address, paused_at)
        figures = finish_stream(label, out, STREAM_SECONDS, paused_at)
        figures["promoted_after_seconds"] = round(promoted_after, 1)
        record_figures("master host frozen", figures)
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


def test_the_promoted_master_restarted_before_any_deploy_comes_back_the_master() -> None:
    # Its replicaof file still says what the last deploy wrote (a replica of the old master):
    # the unit asks the local Sentinel before it starts (follow_sentinel.py) and starts it as
    # the master it is; else the group would have no master until the Sentinels gave up on it.
    now = master()
    assert replicaof_lines(now), "the deploy's file should still name the old master"
    before = run_ids()
    restarted = on(now).run("systemctl restart redis-server")
    assert restarted.rc == 0, restarted.stderr
    assert cli(now, "ROLE").startswith("master")
    assert run_ids()[now] != before[now]
    assert master() == now
    assert replicaof_lines(now) == []
    wait_for("the replicas linked again", healthy, 60)
    assert produce(5)["done"] == 5


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
