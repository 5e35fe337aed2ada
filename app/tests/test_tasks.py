import hashlib
import json
import os
import subprocess
import sys

import pytest
from celery.exceptions import Reject, SoftTimeLimitExceeded
from redis.exceptions import ConnectionError as RedisConnectionError

from taskapp.app import app
from taskapp.tasks import burn, executions_key, ping, process_data, record, record_work, sleep


def test_ping_answers_pong() -> None:
    assert ping() == "pong"
    assert ping.apply().get() == "pong"


def test_process_data_summarises_the_numbers() -> None:
    result = process_data([3, 1.5, -2, 0.5])
    assert result == {
        "count": 4,
        "sum": 3.0,
        "mean": 0.75,
        "min": -2,
        "max": 3,
        "sha256": hashlib.sha256(b"[3,1.5,-2,0.5]").hexdigest(),
    }


def test_process_data_accepts_an_empty_list() -> None:
    assert process_data([]) == {
        "count": 0,
        "sum": 0.0,
        "mean": None,
        "min": None,
        "max": None,
        "sha256": hashlib.sha256(b"[]").hexdigest(),
    }


def test_process_data_is_deterministic_and_exact() -> None:
    data = [0.1] * 10
    assert process_data(data) == process_data(list(data))
    assert process_data(data)["sum"] == 1.0  # fsum: no drift from adding 0.1 ten times


@pytest.mark.parametrize(
    "data", [["1"], [True], [None], [[1.0]], [1, float("nan")], [float("inf")], "12", 5]
)
def test_process_data_rejects_anything_but_finite_numbers(data: object) -> None:
    with pytest.raises((TypeError, ValueError), match=r"data(\[\d\])? must be"):
        process_data(data)


def test_bad_input_fails_the_task_without_retry() -> None:
    result = process_data.apply(args=(["x"],))
    assert result.state == "FAILURE"
    assert isinstance(result.result, TypeError)
    assert "data[0] must be a number" in str(result.result)
    assert not getattr(process_data, "autoretry_for", ())  # nothing would retry it


def test_worker_registers_every_task_by_its_explicit_name() -> None:
    app.loader.import_default_modules()
    assert {
        "taskapp.ping",
        "taskapp.process_data",
        "taskapp.fetch_url",
        "taskapp.sleep",
        "taskapp.record",
        "taskapp.record_work",
    } <= set(app.tasks)


def test_importing_tasks_needs_no_config_file() -> None:
    env = {**os.environ, "RCBUNDLE_CONFIG": "/nonexistent/taskapp.toml"}
    code = "import taskapp.tasks, taskapp.smoke, taskapp.__main__"
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=60)


def test_using_the_app_without_config_fails_loudly() -> None:
    # As the worker units run it: rcbundle's loader, and a config file that is not there.
    env = {
        **os.environ,
        "RCBUNDLE_CONFIG": "/nonexistent/taskapp.toml",
        "CELERY_LOADER": "rcbundle.loader:Loader",
    }
    code = "from taskapp.app import app; app.conf.broker_url"
    proc = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode != 0
    assert "ConfigError: /nonexistent/taskapp.toml: config file not found" in proc.stderr


def test_sleep_returns_the_seconds_slept() -> None:
    assert sleep(0) == 0.0
    assert sleep(0.01) == 0.01


@pytest.mark.parametrize("seconds", [-1, 3601, "5", True, None])
def test_sleep_refuses_bad_durations(seconds: object) -> None:
    with pytest.raises((TypeError, ValueError), match="seconds must be"):
        sleep(seconds)


class _FakeRedis:
    def __init__(self) -> None:
        self.lists: dict[str, list[str]] = {}
        self.ttl: dict[str, int] = {}

    def rpush(self, key: str, value: str) -> None:
        self.lists.setdefault(key, []).append(value)

    def expire(self, key: str, seconds: int) -> None:
        self.ttl[key] = seconds


def test_record_appends_one_entry_per_execution(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = _FakeRedis()
    monkeypatch.setattr(type(app.backend), "client", fake, raising=False)
    first = record.apply(args=("unit",)).get()
    record.apply(args=("unit",)).get()
    entries = [json.loads(e) for e in fake.lists[executions_key("unit")]]
    assert len(entries) == 2
    assert entries[0]["id"] == first["id"]
    assert {"id", "worker", "at"} <= set(entries[0])
    assert fake.ttl[executions_key("unit")] == app.conf.result_expires


def test_executions_key_is_under_the_key_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(app.conf, "result_backend_transport_options", {"global_keyprefix": "app:"})
    assert executions_key("beat") == "app:taskapp-executions:beat"


def test_burn_chains_sha256_rounds() -> None:
    expected = b"taskapp"
    for _ in range(3):
        expected = hashlib.sha256(expected).digest()
    assert burn(3) == expected.hex()
    assert burn(0) == b"taskapp".hex()
    assert burn.apply(args=(3,)).get() == expected.hex()


@pytest.mark.parametrize("rounds", [-1, 10_000_001, 1.5, "9", True])
def test_burn_rejects_bad_rounds(rounds: object) -> None:
    with pytest.raises((TypeError, ValueError), match="rounds must be"):
        burn(rounds)


def test_record_work_records_a_start_and_a_done_per_execution(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake = _FakeRedis()
    monkeypatch.setattr(type(app.backend), "client", fake, raising=False)
    record_work.apply(args=("k1", 0.01, "unit-work")).get()
    record_work.apply(args=("k1", 0, "unit-work")).get()
    entries = [json.loads(e) for e in fake.lists[executions_key("unit-work")]]
    assert [(e["key"], e["phase"]) for e in entries] == [("k1", "start"), ("k1", "done")] * 2
    first, second = entries[0:2], entries[2:4]
    # Each execution pairs its start with its done, and differs from the other execution.
    assert first[0]["execution"] == first[1]["execution"] != second[0]["execution"]
    assert first[1]["at"] - first[0]["at"] >= 0.01
    assert first[0]["pid"] == os.getpid()
    assert fake.ttl[executions_key("unit-work")] == app.conf.result_expires


def test_record_work_killed_midway_leaves_a_start_without_done(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake = _FakeRedis()
    monkeypatch.setattr(type(app.backend), "client", fake, raising=False)

    def killed(seconds: float) -> None:
        raise KeyboardInterrupt  # stands in for the SIGKILL that ends the process mid-sleep

    monkeypatch.setattr("taskapp.tasks.time.sleep", killed)
    with pytest.raises(KeyboardInterrupt):
        record_work.run("k2", 5, "unit-killed")
    entries = [json.loads(e) for e in fake.lists[executions_key("unit-killed")]]
    assert [e["phase"] for e in entries] == ["start"]


@pytest.mark.parametrize(
    ("key", "seconds"), [("", 0), (5, 0), ("x" * 201, 0), ("k", -1), ("k", "1"), ("k", True)]
)
def test_record_work_refuses_bad_input_before_recording(
    monkeypatch: pytest.MonkeyPatch, key: object, seconds: object
) -> None:
    fake = _FakeRedis()
    monkeypatch.setattr(type(app.backend), "client", fake, raising=False)
    with pytest.raises((TypeError, ValueError), match=r"key must be|seconds must be"):
        record_work.run(key, seconds, "unit-bad")
    assert fake.lists == {}


class _FlakyRedis(_FakeRedis):
    """Refuses the first `failures` writes, as Redis does while it restarts."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures

    def rpush(self, key: str, value: str) -> None:
        if self.failures:
            self.failures -= 1
            raise RedisConnectionError("Connection reset by peer")
        super().rpush(key, value)


def test_record_work_rides_out_a_redis_restart(monkeypatch: pytest.MonkeyPatch) -> None:
    flaky = _FlakyRedis(failures=3)
    monkeypatch.setattr(type(app.backend), "client", flaky, raising=False)
    monkeypatch.setattr("taskapp.tasks.time.sleep", lambda seconds: None)
    record_work.run("k3", 0, "unit-restart")
    phases = [json.loads(e)["phase"] for e in flaky.lists[executions_key("unit-restart")]]
    assert phases == ["start", "done"]


def test_record_work_hands_its_message_back_when_redis_stays_away(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A failed task is acknowledged and gone; a rejected one with requeue comes back.
    flaky = _FlakyRedis(failures=10**6)
    monkeypatch.setattr(type(app.backend), "client", flaky, raising=False)
    monkeypatch.setattr("taskapp.tasks.WRITE_RETRY_SECONDS", 0.3)
    with pytest.raises(Reject) as rejected:
        record_work.run("k4", 0, "unit-gone")
    assert rejected.value.args[1] is True  # Reject(reason, requeue)
    assert isinstance(rejected.value.__cause__, RedisConnectionError)
    assert flaky.lists == {}


def test_record_work_hands_its_message_back_when_the_soft_limit_ends_the_write(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def soft_limit(seconds: float) -> None:
        raise SoftTimeLimitExceeded()

    flaky = _FlakyRedis(failures=1)
    monkeypatch.setattr(type(app.backend), "client", flaky, raising=False)
    monkeypatch.setattr("taskapp.tasks.time.sleep", soft_limit)
    with pytest.raises(Reject) as rejected:
        record_work.run("k5", 0, "unit-soft")
    assert rejected.value.args[1] is True  # Reject(reason, requeue)


def test_record_hands_its_message_back_when_redis_stays_away(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(type(app.backend), "client", _FlakyRedis(failures=10**6), raising=False)
    monkeypatch.setattr("taskapp.tasks.WRITE_RETRY_SECONDS", 0.0)
    with pytest.raises(Reject):
        record.run("unit-beat-gone")


def test_only_long_tasks_record_a_started_state() -> None:
    tracked = {name for name, task in app.tasks.items() if getattr(task, "track_started", False)}
    assert {"taskapp.sleep", "taskapp.fetch_url"} <= tracked
    assert not tracked & {"taskapp.ping", "taskapp.process_data", "taskapp.record_work"}
