import subprocess
import sys

import pytest
import redis
from celery.result import AsyncResult

from tests.integration.cluster import KEY_PREFIX, WORKER_NAME, Cluster

pytestmark = pytest.mark.integration

TIMEOUT = 15


def test_ping_round_trip(cluster: Cluster) -> None:
    result = cluster.client.send_task("taskapp.ping")
    assert result.get(timeout=TIMEOUT) == "pong"
    assert result.state == "SUCCESS"


def test_process_data_results(cluster: Cluster) -> None:
    result = cluster.client.send_task("taskapp.process_data", args=([1, 2, 3, 4.5],))
    value = result.get(timeout=TIMEOUT)
    assert {k: value[k] for k in ("count", "sum", "mean", "min", "max")} == {
        "count": 4,
        "sum": 10.5,
        "mean": 2.625,
        "min": 1,
        "max": 4.5,
    }
    assert len(value["sha256"]) == 64


def test_bad_input_fails_on_the_worker(cluster: Cluster) -> None:
    result = cluster.client.send_task("taskapp.process_data", args=(["x"],))
    with pytest.raises(TypeError, match=r"data\[0\] must be a number"):
        result.get(timeout=TIMEOUT)
    assert result.state == "FAILURE"


def test_result_reports_the_worker_that_ran_it(cluster: Cluster) -> None:
    sent = cluster.client.send_task("taskapp.process_data", args=([7.0],))
    sent.get(timeout=TIMEOUT)
    assert str(sent.worker).startswith(f"{WORKER_NAME}@")
    # A client that did not send the task learns it from the stored result alone.
    looked_up: AsyncResult[object] = AsyncResult(sent.id, app=cluster.client)
    assert looked_up.worker == sent.worker
    assert looked_up.name == "taskapp.process_data"


def test_keys_stay_under_the_prefix(cluster: Cluster) -> None:
    cluster.client.send_task("taskapp.ping").get(timeout=TIMEOUT)
    for db in (0, 1):
        keys = [str(key) for key in cluster.redis.client(cluster.redis.password, db).scan_iter()]
        assert keys
        assert all(key.startswith(KEY_PREFIX) for key in keys), keys


def test_smoke_command_passes(cluster: Cluster) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "taskapp", "smoke", "--count", "5", "--timeout", str(TIMEOUT)],
        env=cluster.env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT + 30,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[-1] == "smoke: 6 passed, 0 failed"
    workers = [line.split()[3] for line in lines[:-1] if line.split()[2] == "SUCCESS"]
    assert len(workers) == 6
    assert all(name.startswith(f"{WORKER_NAME}@") for name in workers), workers


def test_ping_workers_command_lists_the_worker(cluster: Cluster) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "taskapp", "ping-workers"],
        env=cluster.env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.startswith(f"{WORKER_NAME}@")


def test_client_without_password_is_refused(cluster: Cluster) -> None:
    with pytest.raises(redis.AuthenticationError):
        cluster.redis.client(password=None).ping()


def test_client_with_wrong_password_is_refused(cluster: Cluster) -> None:
    with pytest.raises(redis.AuthenticationError):
        cluster.redis.client(password="wrong").ping()


def test_process_data_travels_on_the_cpu_queue(cluster: Cluster) -> None:
    # The client routes by the same config the worker reads; the worker consumes cpu.
    assert cluster.client.amqp.router.route({}, "taskapp.process_data")["queue"].name == "cpu"
    assert cluster.client.send_task("taskapp.process_data", args=([1.0],)).get(timeout=TIMEOUT)


def test_record_counts_each_execution(cluster: Cluster) -> None:
    for _ in range(3):
        cluster.client.send_task("taskapp.record", args=("itest",)).get(timeout=TIMEOUT)
    key = f"{KEY_PREFIX}taskapp-executions:itest"
    assert cluster.redis.client(cluster.redis.password, 1).llen(key) == 3
