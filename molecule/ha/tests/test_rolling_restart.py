"""A deploy that restarts every Redis server of the group (`databases`, a redis.conf setting
Redis does not take live) under a task stream from the bundle's producer: the servers restart
in turn, the replicas first, the master after a planned switchover, and the stream loses no
accepted task and is refused no send; the workers follow without a restart. The figures go to
build/failover.json ("rolling restart"), beside the failover's; `make chaos-ha` repeats it,
back and forth (test_experiments.py).

First, a setting one server refuses at its restart: that server alone is rolled back, the
others, which never restarted, keep serving, and the stream goes on."""

from __future__ import annotations

import json

from conftest import (
    REDIS,
    cli,
    healthy,
    produce,
    record_figures,
    rolling_deploy,
    wait_for,
)

# 192.0.2.1 (TEST-NET-1) is on no host: each server's restart fails there, the first replica's
# in its turn first. Well-formed, so validation lets it through, as it would a user's typo.
REFUSED = json.dumps(
    {"redis_bind": ["127.0.0.1", "{{ ansible_facts['default_ipv4']['address'] }}", "192.0.2.1"]}
)

# The inventory's `databases` is the role's default, 16; 17 needs a restart and harms nothing.
CHANGED = '{"redis_databases": 17}'


def databases(host: str) -> str:
    return cli(host, "CONFIG", "GET", "databases").splitlines()[-1]


def record(figures: dict[str, object]) -> None:
    """The figures without the deploy's output, as "rolling restart"."""
    shown = {name: value for name, value in figures.items() if name != "deploy_tail"}
    record_figures("rolling restart", shown)


def failure(out: str, host: str) -> str:
    """The message HOST's run ended with: its last failure in the deploy's output."""
    start = out.rindex(f"fatal: [{host}]: FAILED!")
    end = out.find("fatal: [", start + 1)
    return out[start : end if end != -1 else len(out)]


def test_a_setting_the_first_replica_refuses_rolls_back_that_server_alone() -> None:
    figures = rolling_deploy("-e", REFUSED)
    out = str(figures["deploy_tail"])
    assert figures["deploy_rc"] != 0, figures
    first = next(host for host in REDIS if host != figures["master_before"])
    # Its host's rollback: Redis's words, and its server back on the earlier files.
    own = failure(out, first)
    assert "Could not create server TCP listening socket 192.0.2.1:6379" in own, own
    assert "Rolled back: the earlier configuration is back and answers (redis-server)" in own
    # The others stopped, named the server that did not come back, and only got their files
    # back: they never loaded this run's.
    for host in REDIS:
        if host != first:
            theirs = failure(out, host)
            assert f"redis-server on {first} did not come back from its restart in turn" in theirs
            assert "answers (no server needed a restart)" in theirs, theirs
    assert "PLAY [Celery workers]" not in out
    assert figures["servers_restarted"] == 1, (figures, out[-6000:])
    assert figures["master_after"] == figures["master_before"], figures
    assert figures["tasks_lost"] == 0, figures
    assert figures["sends_refused"] == 0, figures
    assert not figures["worker_restarted"], figures
    wait_for("the group healthy", healthy, 60)
    assert produce(5)["done"] == 5
    # The next test's deploy puts the inventory's certificates back (this run issued them
    # with 192.0.2.1 too; the rollback put the earlier ones back on the hosts).


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
