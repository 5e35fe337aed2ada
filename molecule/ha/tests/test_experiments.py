"""`make chaos-ha`: the master's faults repeated under a task stream, for the p50 and the
worst case the single runs of `make test` cannot give. Each round: the bundle's producer
sends a task every 0.1 s for 40 s, 8 s in the master's server is killed with SIGKILL.

- "master SIGKILLed and kept down": its unit is kept from restarting, so the Sentinels
  promote a replica (with the durable publish, and again without it: what a producer that
  does not wait for a replica risks). The killed server is then started again and rejoins as
  a replica, and the next round kills the new master.
- "master SIGKILLed, restarted by systemd": as the unit is (Restart=always): the server
  comes back in a fraction of a second with its AOF, before the Sentinels decide it is down.
- "master host cut off": test_isolation.py's round (the master's host off the network while
  a client beside it writes), repeated.
- "rolling restart": the ha scenario's rolling deploys (a setting that needs a restart, then
  back), repeated.

Counted from the producer's side as in test_failover.py. The figures go to
build/ha-experiments.json (RELIABILITY.md: `python -m chaos --ha-experiments
build/ha-experiments.json`)."""

from __future__ import annotations

import os
import time
from typing import Any

import pytest
from conftest import (
    REDIS,
    WORKER,
    address,
    cli,
    finish_stream,
    healthy,
    master,
    on,
    record_experiment,
    rolling_deploy,
    start_stream,
    wait_for,
    wait_promoted,
    worker_pids,
)
from test_isolation import REFUSED_WITHIN, cut_off_round
from test_rolling_restart import CHANGED

from chaos.accounting import summary

pytestmark = pytest.mark.experiment

ROUNDS = int(os.environ.get("HA_ROUNDS", "5"))
STREAM_SECONDS = 40
KILL_AFTER = 8
# A runtime drop-in (gone at the host's reboot) that keeps the killed server down.
KEEP_DOWN = "/run/systemd/system/redis-server.service.d/zz-kept-down.conf"
COUNTS = ("tasks_sent", "tasks_accepted", "sends_refused", "tasks_lost", "tasks_run_twice")


def kill_master(keep_down: bool) -> tuple[str, str, float]:
    """SIGKILL to the master's server (kept down when KEEP_DOWN): the host, its address and
    when."""
    old = master()
    old_address = address(old)
    if keep_down:
        kept = on(old).run(
            f"mkdir -p {os.path.dirname(KEEP_DOWN)} && printf '[Service]\\nRestart=no\\n' >"
            f" {KEEP_DOWN} && systemctl daemon-reload"
        )
        assert kept.rc == 0, kept.stderr
    killed_at = time.time()
    killed = on(old).run("systemctl kill --signal=SIGKILL redis-server.service")
    assert killed.rc == 0, killed.stderr
    return old, old_address, killed_at


def bring_back(host: str) -> None:
    """HOST's server started again after a round that kept it down, back as a replica."""
    started = on(host).run(
        f"rm -f {KEEP_DOWN} && systemctl daemon-reload && systemctl start redis-server.service"
    )
    assert started.rc == 0, started.stderr
    wait_for(f"{host} back as a replica", lambda: cli(host, "ROLE").startswith("slave"), 90)


def kill_round(keep_down: bool, replicas: int | None = None) -> dict[str, Any]:
    """One round under a stream (its durable publish waiting for REPLICAS when given)."""
    wait_for("the group healthy", healthy, 90)
    pids = worker_pids()
    label, out = start_stream(STREAM_SECONDS, replicas)
    time.sleep(KILL_AFTER)
    old, old_address, killed_at = kill_master(keep_down)
    try:
        promoted = wait_promoted(old, old_address, killed_at) if keep_down else None
        figures = finish_stream(label, out, STREAM_SECONDS, killed_at)
    finally:
        if keep_down:
            bring_back(old)
    wait_for("the group healthy", healthy, 90)
    return figures | {
        "worker_reconnects": reconnects(killed_at),
        "killed": old,
        "master_after": master(),
        "promoted_after_seconds": None if promoted is None else round(promoted, 1),
        "worker_restarted": worker_pids() != pids,
    }


def reconnects(since: float) -> dict[str, int]:
    """The workers' broker reconnects since SINCE, by transport: the bundle's, or kombu's own
    (which kombu's switch to the next Sentinel URL put in its place before rcbundle 1.4.2)."""
    log = on(WORKER).run(f"journalctl -u 'celery-worker@*' --since @{int(since)} --no-pager")
    lines = [line for line in log.stdout.splitlines() if "Connected to " in line]
    bundle = sum(1 for line in lines if "Connected to rcbundle.transport:" in line)
    return {"bundle": bundle, "kombu": len(lines) - bundle}


def summarize(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """The rounds' counts added up, their times as p50/max, and each round as it was."""

    def times(key: str) -> dict[str, float | int | None]:
        return summary([r[key] for r in rounds if r.get(key) is not None])

    return {
        "rounds": len(rounds),
        **{key: sum(int(r[key]) for r in rounds) for key in COUNTS},
        "promoted_after_seconds": times("promoted_after_seconds"),
        "first_task_after_seconds": times("first_task_after_seconds"),
        "master_moved": sum(1 for r in rounds if r["master_after"] != r["killed"]),
        "workers_restarted": sum(1 for r in rounds if r["worker_restarted"]),
        "worker_reconnects_on_kombus_transport": sum(
            int(r.get("worker_reconnects", {}).get("kombu", 0)) for r in rounds
        ),
        "per_round": rounds,
    }


def test_a_killed_master_kept_down_loses_and_refuses_nothing() -> None:
    rounds = [kill_round(keep_down=True) for _ in range(ROUNDS)]
    figures = summarize(rounds)
    record_experiment("master SIGKILLed and kept down, durable publish", figures)
    print(f"master killed and kept down: {figures}")
    assert figures["tasks_lost"] == 0, figures
    assert figures["sends_refused"] == 0, figures  # they wait for the promotion instead
    assert figures["worker_reconnects_on_kombus_transport"] == 0, figures
    assert all(r["worker_reconnects"]["bundle"] > 0 for r in rounds), figures
    assert figures["master_moved"] == ROUNDS, figures
    assert figures["workers_restarted"] == 0, figures
    assert all(r["first_task_after_seconds"] is not None for r in rounds), figures


def test_without_the_durable_publish_the_loss_is_measured() -> None:
    # No assertion on the loss: this is what a producer without the wait risks.
    rounds = [kill_round(keep_down=True, replicas=0) for _ in range(max(ROUNDS // 2, 1))]
    figures = summarize(rounds)
    record_experiment("master SIGKILLed and kept down, no durable publish", figures)
    print(f"master killed and kept down, no durable publish: {figures}")
    assert figures["master_moved"] == len(rounds), figures
    assert all(r["first_task_after_seconds"] is not None for r in rounds), figures


def test_a_killed_master_restarted_by_systemd_loses_and_refuses_nothing() -> None:
    rounds = [kill_round(keep_down=False) for _ in range(max(ROUNDS // 2, 1))]
    figures = summarize(rounds)
    record_experiment("master SIGKILLed, restarted by systemd", figures)
    print(f"master killed and restarted: {figures}")
    assert figures["tasks_lost"] == 0, figures
    # They wait until a replica has linked to the restarted master again (NOREPLICAS before).
    assert figures["sends_refused"] == 0, figures
    assert figures["worker_reconnects_on_kombus_transport"] == 0, figures
    assert figures["workers_restarted"] == 0, figures


def test_a_master_cut_off_repeated_loses_nothing_a_replica_acknowledged() -> None:
    rounds: list[dict[str, Any]] = []
    for _ in range(max(ROUNDS // 2, 1)):
        wait_for("the group healthy", healthy, 90)
        pids = worker_pids()
        run = cut_off_round()
        rounds.append(
            run
            | {
                "killed": run["cut_off"],
                "master_after": master(),
                "worker_restarted": worker_pids() != pids,
            }
        )
    figures = summarize(rounds)
    for key in ("isolated_writes_acknowledged_and_lost", "isolated_plain_writes_taken_then_lost"):
        figures[key] = sum(int(r[key]) for r in rounds)
    refused = [r["isolated_master_refused_writes_after_seconds"] for r in rounds]
    figures["isolated_master_refused_writes_after_seconds"] = summary(
        [float(x) for x in refused if x is not None]
    )
    record_experiment("master host cut off", figures)
    print(f"master cut off, repeated: {figures}")
    assert figures["tasks_lost"] == 0, figures
    assert figures["isolated_writes_acknowledged_and_lost"] == 0, figures
    assert all(x is not None and float(x) < REFUSED_WITHIN for x in refused), figures
    assert figures["workers_restarted"] == 0, figures


def test_rolling_restarts_repeated_lose_and_refuse_nothing() -> None:
    rounds: list[dict[str, Any]] = []
    for _ in range(max(ROUNDS // 2, 1)):
        for args in (["-e", CHANGED], []):
            wait_for("the group healthy", healthy, 90)
            run = rolling_deploy(*args)
            assert run.pop("deploy_rc") == 0, run["deploy_tail"]
            run.pop("deploy_tail")
            rounds.append(run | {"killed": run["master_before"], "promoted_after_seconds": None})
    figures = summarize(rounds)
    figures["longest_send_seconds"] = summary([float(r["longest_send_seconds"]) for r in rounds])
    record_experiment("rolling restart", figures)
    print(f"rolling restarts: {figures}")
    assert figures["tasks_lost"] == 0, figures
    assert figures["sends_refused"] == 0, figures
    assert figures["workers_restarted"] == 0, figures
    assert all(int(r["servers_restarted"]) == len(REDIS) for r in rounds), figures
