"""A deploy that restarts every Redis server of the group (`databases`, a redis.conf setting
Redis does not take live) under a task stream from the bundle's producer: the servers restart
in turn, the replicas first, the master after a planned switchover, and the stream loses no
accepted task and is refused no send; the workers follow without a restart. The figures go to
build/failover.json ("rolling restart"), beside the failover's; `make chaos-ha` repeats it,
back and forth (test_experiments.py)."""

from __future__ import annotations

from conftest import REDIS, cli, healthy, produce, record_figures, rolling_deploy, wait_for

# The inventory's `databases` is the role's default, 16; 17 needs a restart and harms nothing.
CHANGED = '{"redis_databases": 17}'


def databases(host: str) -> str:
    return cli(host, "CONFIG", "GET", "databases").splitlines()[-1]


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
