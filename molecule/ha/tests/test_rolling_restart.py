"""A deploy that restarts every Redis server of the group (`databases`, a redis.conf setting
Redis does not take live) under a task stream from the bundle's producer: the servers restart
in turn, the replicas first, the master after a planned switchover, and the stream loses no
accepted task and is refused no send; the workers follow without a restart. A deploy back to
the inventory's settings rolls again. The figures go to build/failover.json ("rolling
restart"), beside the failover's."""

from __future__ import annotations

import itertools
import json
import time

from conftest import (
    REDIS,
    WORKER,
    address,
    cli,
    deploy,
    finish_stream,
    master,
    master_address,
    on,
    produce,
    record_figures,
    run_ids,
    start_stream,
    wait_for,
    worker_pids,
)

# The stream runs until the deploy is over (its OUT.stop file), at most this long.
STREAM_SECONDS = 1200
# The inventory's `databases` is the role's default, 16; 17 needs a restart and harms nothing.
CHANGED = '{"redis_databases": 17}'


def databases(host: str) -> str:
    return cli(host, "CONFIG", "GET", "databases").splitlines()[-1]


def healthy() -> bool:
    """Every replica linked to the master, every Sentinel naming it."""
    now = master()
    linked = all(
        "master_link_status:up" in cli(host, "INFO", "replication") for host in REDIS if host != now
    )
    return linked and all(master_address(host) == address(now) for host in REDIS)


def rolling_deploy(*args: str) -> dict[str, object]:
    """A deploy with ARGS under a task stream: the stream's figures, the deploy's own, and
    which servers restarted and where the master went."""
    old, before, pids = master(), run_ids(), worker_pids()
    label, out = start_stream(STREAM_SECONDS)
    time.sleep(5)
    started = time.time()
    run = deploy(*args)
    deploy_seconds = time.time() - started
    time.sleep(5)
    on(WORKER).run(f"touch {out}.stop")
    figures = finish_stream(label, out, 10, started)
    sends = json.loads(on(WORKER).file(out).content_string)
    after = run_ids()
    return figures | {
        # The longest a send waited (the stream sends every 0.1 s): the switchover's pause.
        "longest_send_seconds": round(
            max((b[1] - a[1] for a, b in itertools.pairwise(sends)), default=0.0) - 0.1,
            1,
        ),
        "deploy_rc": run.returncode,
        "deploy_seconds": round(deploy_seconds, 1),
        "servers_restarted": sum(1 for host in REDIS if after[host] != before[host]),
        "master_before": old,
        "master_after": master(),
        "worker_restarted": worker_pids() != pids,
        "deploy_tail": run.stdout[-3000:] if run.returncode else "",
    }


def record(figures: dict[str, object]) -> None:
    """The figures without the deploy's output, as "rolling restart"."""
    shown = {name: value for name, value in figures.items() if name != "deploy_tail"}
    record_figures("rolling restart", shown)


def test_a_restart_rolls_through_the_group_under_a_task_stream() -> None:
    figures = rolling_deploy("-e", CHANGED)
    record(figures)
    print(f"rolling restart under a stream: {figures}")
    assert figures["deploy_rc"] == 0, figures["deploy_tail"]
    assert all(databases(host) == "17" for host in REDIS)
    assert figures["servers_restarted"] == len(REDIS), figures
    assert figures["master_after"] != figures["master_before"], figures  # a switchover
    assert figures["tasks_lost"] == 0, figures
    assert figures["sends_refused"] == 0, figures
    assert not figures["worker_restarted"], figures
    wait_for("the group healthy", healthy, 30)
    assert produce(5)["done"] == 5


def test_a_deploy_back_to_the_inventorys_settings_rolls_again() -> None:
    figures = rolling_deploy()
    print(f"rolling restart back: {figures}")
    assert figures["deploy_rc"] == 0, figures["deploy_tail"]
    assert all(databases(host) == "16" for host in REDIS)
    assert figures["servers_restarted"] == len(REDIS), figures
    assert figures["tasks_lost"] == 0, figures
    assert figures["sends_refused"] == 0, figures
    assert not figures["worker_restarted"], figures
    wait_for("the group healthy", healthy, 30)
