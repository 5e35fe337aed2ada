"""A user's app (tests/apps/textstats), deployed with inventory variables only, runs tasks sent
by a producer that has no code of the bundle's: plain Celery, the broker URL and nothing else."""

from __future__ import annotations

import re

import pytest
import redis
from celery import Celery
from conftest import CONTROLLER_PORT

WORKER1, WORKER2 = "mol-default-worker1", "mol-default-worker2"


def test_a_plain_producers_tasks_run_on_the_fleet(client: Celery) -> None:
    results = [
        client.send_task("textstats.tasks.words", args=(f"the cat and the hat {i}",))
        for i in range(12)
    ]
    workers = set()
    for i, result in enumerate(results):
        assert result.get(timeout=60) == {"words": 6, "top": ["the", "cat", "and"]}, i
        workers.add(str(result.worker))
    # Which node takes a task is the consumers' race (one fast node may take them all):
    # both hosts answering is test_both_hosts_answer_a_control_ping.
    hosts = {w.split("@")[1] for w in workers}
    assert hosts <= {WORKER1, WORKER2}, workers
    # worker1 runs one node per vCPU (default, default-2, ...), worker2 one node.
    assert all(re.fullmatch(r"default(-\d+)?", w.split("@")[0]) for w in workers), workers


def test_the_third_party_dependency_is_installed_and_the_apps_route_is_served(
    client: Celery,
) -> None:
    # textstats routes slug to queue "text" in its pyproject.toml; the hosts' queues derive
    # from the app's routes, so both consume it without an inventory line.
    result = client.send_task("textstats.tasks.slug", args=("Crème Brûlée, à la carte!",))
    assert result.get(timeout=60) == "creme-brulee-a-la-carte"
    queues = client.control.inspect(timeout=5).active_queues() or {}
    assert queues, "no worker answered"
    for node, consumed in queues.items():
        assert {q["name"] for q in consumed} == {"celery", "text"}, node


def test_both_hosts_answer_a_control_ping(client: Celery) -> None:
    answering = {name for reply in client.control.ping(timeout=3) for name in reply}
    assert f"default@{WORKER1}" in answering
    assert f"default@{WORKER2}" in answering


def test_unauthenticated_controller_is_refused() -> None:
    plain = redis.Redis(host="127.0.0.1", port=CONTROLLER_PORT, socket_timeout=5)
    with pytest.raises(redis.exceptions.AuthenticationError):
        plain.ping()


def test_the_soft_time_limit_ends_tasks_on_solo_and_prefork_nodes(client: Celery) -> None:
    # worker1's nodes are solo (rcbundle.solo), worker2's is prefork: both enforce it. The hard
    # limit's own path (a task that ignores the soft one) is in runtime/tests/test_solo.py.
    results = [
        client.send_task("textstats.tasks.wait", args=(60,), soft_time_limit=1) for _ in range(6)
    ]
    ended_on = set()
    for result in results:
        result.get(timeout=30, propagate=False)
        assert result.state == "FAILURE", (result.state, result.result)
        assert type(result.result).__name__ == "SoftTimeLimitExceeded", repr(result.result)
        ended_on.add(str(result.worker).split("@")[1])
    assert ended_on == {WORKER1, WORKER2}, ended_on
    # The nodes whose task was ended are still there, and serve the next task.
    assert client.send_task("textstats.tasks.slug", args=("ok",)).get(timeout=30) == "ok"
