import pytest
from kombu.exceptions import OperationalError

import taskapp.__main__ as cli
from rcbundle import ConfigError
from taskapp.app import app
from taskapp.smoke import smoke_inputs


def test_smoke_inputs_are_distinct_and_stable() -> None:
    inputs = smoke_inputs(5)
    assert len({tuple(data) for data in inputs}) == 5
    assert inputs == smoke_inputs(5)


def test_negative_count_is_a_usage_error() -> None:
    with pytest.raises(SystemExit) as caught:
        cli.main(["smoke", "--count", "-1"])
    assert caught.value.code == 2


def test_ping_workers_lists_the_answering_workers(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    replies = [{"b@host": {"ok": "pong"}}, {"a@host": {"ok": "pong"}}]
    monkeypatch.setattr(app.control, "ping", lambda timeout: replies)
    assert cli.main(["ping-workers"]) == 0
    assert capsys.readouterr().out == "a@host\nb@host\n"


def test_ping_workers_fails_when_no_worker_answers(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(app.control, "ping", lambda timeout: [])
    assert cli.main(["ping-workers", "--timeout", "0.1"]) == 1
    assert "no worker answered" in capsys.readouterr().out


def test_config_error_exits_2_with_the_message(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def broken(*args: object) -> bool:
        raise ConfigError("redis.host: must not be empty")

    monkeypatch.setattr(cli, "run_smoke", broken)
    assert cli.main(["smoke"]) == 2
    assert "redis.host: must not be empty" in capsys.readouterr().err


def test_unreachable_redis_exits_1_with_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def refused(*args: object) -> bool:
        raise OperationalError("Error 111 connecting to redis1:6379. Connection refused.")

    monkeypatch.setattr(cli, "ping_workers", refused)
    assert cli.main(["ping-workers"]) == 1
    assert "cannot reach Redis: Error 111" in capsys.readouterr().err
