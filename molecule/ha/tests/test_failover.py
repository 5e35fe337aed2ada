"""A failover with tasks before and after: the master's host freezes (podman pause: no answer,
no goodbye), the Sentinels promote a replica, and the worker and a user's plain Celery producer
follow the new master without a restart. The old master comes back as a replica, and a deploy
afterwards keeps the master where Sentinel put it."""

from __future__ import annotations

import subprocess
import time

from conftest import REDIS, WORKER, address, cli, deploy, master, master_address, on, produce


def worker_pids() -> str:
    return str(on(WORKER).run("systemctl show -p MainPID --value 'celery-worker@*'").stdout)


def wait_for(what: str, check: object, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        time.sleep(1)
    raise AssertionError(f"{what}: not within {seconds} s")


def test_tasks_run_before_during_and_after_a_failover() -> None:
    before = produce(20)
    assert before["done"] == 20, before
    pids = worker_pids()
    old = master()
    old_address = address(old)  # a paused container runs no command
    others = [host for host in REDIS if host != old]
    subprocess.run(["podman", "pause", old], check=True)
    try:
        paused = time.monotonic()
        wait_for(
            "a replica promoted",
            lambda: all(master_address(host) not in ("", old_address) for host in others),
            60,
        )
        promoted = time.monotonic() - paused
        after = produce(20)
        assert after["done"] == 20, after
        assert worker_pids() == pids  # followed, not restarted
        new = next(host for host in others if address(host) == master_address(others[0]))
        assert cli(new, "ROLE").splitlines()[0] == "master"
        print(f"failover: promoted {promoted:.1f} s after the pause; after: {after}")
    finally:
        subprocess.run(["podman", "unpause", old], check=True)
    wait_for("the old master back as a replica", lambda: cli(old, "ROLE").startswith("slave"), 60)
    wait_for(
        "the old master in sync",
        lambda: "master_link_status:up" in cli(old, "INFO", "replication"),
        60,
    )
    assert produce(5)["done"] == 5


def test_a_deploy_after_the_failover_keeps_the_new_master() -> None:
    now = master()
    assert now != REDIS[0]  # the failover above moved it
    run = deploy()
    assert run.returncode == 0, run.stdout[-4000:]
    assert master() == now
    for host in REDIS:
        replicaof = on(host).file("/etc/redis/redis-replicaof.conf").content_string
        lines = [line for line in replicaof.splitlines() if line.startswith("replicaof")]
        assert lines == ([] if host == now else [f"replicaof {address(now)} 6379"])
    again = deploy()
    assert again.returncode == 0, again.stdout[-4000:]
    recap = again.stdout.split("PLAY RECAP")[-1]
    assert recap.count("changed=0") == len(REDIS) + 1, recap  # and the worker host
    assert produce(5)["done"] == 5
