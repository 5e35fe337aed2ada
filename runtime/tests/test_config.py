import copy
import socket
import ssl
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import Celery
from celery.backends.redis import RedisBackend
from kombu.utils.url import url_to_parts

from rcbundle.config import (
    SENTINEL_PUBLISH_RETRY_POLICY,
    CelerySettings,
    ConfigError,
    RedisSettings,
    Settings,
    TlsSettings,
    celery_config,
    load_settings,
    parse_settings,
)

MINIMAL: dict[str, Any] = {"redis": {"host": "redis1", "password": "secret"}}
FULL: dict[str, Any] = {
    "redis": {
        "host": "redis1",
        "port": 6380,
        "username": "celery",
        "password": "secret",
        "broker_db": 2,
        "result_db": 3,
        "key_prefix": "app:",
        "tls": {"enabled": True, "ca_file": "/ca", "cert_file": "/cert", "key_file": "/key"},
    },
    "celery": {
        "task_soft_time_limit": 10,
        "task_time_limit": 20,
        "visibility_timeout": 30,
        "result_expires": 40,
        "worker_prefetch_multiplier": 4,
        "worker_soft_shutdown_timeout": 0,
        "default_queue": "work",
    },
}


TICK = {"task": "shop.record", "every": 10}


def with_value(base: dict[str, Any], dotted: str, value: object) -> dict[str, Any]:
    """A deep copy of base with dotted set to value, or removed when value is ..."""
    data = copy.deepcopy(base)
    *parents, leaf = dotted.split(".")
    table = data
    for name in parents:
        table = table.setdefault(name, {})
    if value is ...:
        del table[leaf]
    else:
        table[leaf] = value
    return data


def test_minimal_config_takes_the_documented_defaults() -> None:
    assert parse_settings(MINIMAL) == Settings(
        redis=RedisSettings(host="redis1", password="secret"), celery=CelerySettings()
    )
    defaults = parse_settings(MINIMAL)
    assert (defaults.redis.port, defaults.redis.broker_db, defaults.redis.result_db) == (6379, 0, 1)
    assert defaults.redis.tls == TlsSettings(enabled=False)
    assert defaults.celery.task_time_limit == 330
    assert defaults.celery.visibility_timeout == 3600
    assert defaults.celery.default_queue == "celery"


def test_full_config_is_read_as_written() -> None:
    settings = parse_settings(FULL)
    assert settings.redis.tls == TlsSettings(
        enabled=True, ca_file="/ca", cert_file="/cert", key_file="/key"
    )
    assert settings.celery.default_queue == "work"
    assert settings.redis.username == "celery"


def test_settings_are_frozen() -> None:
    settings = parse_settings(MINIMAL)
    with pytest.raises(AttributeError):
        settings.redis.host = "other"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("dotted", "value"),
    [
        ("redis", ...),
        ("redis.host", ...),
        ("redis.host", ""),
        ("redis.host", "  "),
        ("redis.password", ...),
        ("redis.password", ""),
        ("redis.port", True),
        ("redis.port", "6379"),
        ("redis.port", 6379.0),
        ("redis.port", 0),
        ("redis.port", 65536),
        ("redis.broker_db", 16),
        ("redis.result_db", -1),
        ("redis.result_port", -1),
        ("redis.result_port", 65536),
        ("redis.result_host", 1),
        ("redis.username", 5),
        ("redis.passwrd", "typo"),
        ("redis.tls", "yes"),
        ("redis.tls.enabled", 1),
        ("redis.tls.verify", False),
        ("celery.task_time_limit", 30.5),
        ("celery.worker_prefetch_multiplier", 0),
        ("celery.worker_prefetch_multiplier", False),
        ("celery.result_expires", 0),
        ("celery.worker_soft_shutdown_timeout", -1),
        ("celery.default_queue", ""),
        ("celery.concurrency", 4),
        ("beat", {}),
        ("celery.task_routes", "cpu"),
        ("celery.task_routes.slow", 1),
        ("celery.task_routes.slow", ""),
        ("celery.beat_schedule", []),
        ("celery.beat_schedule.tick", "shop.record"),
        ("celery.beat_schedule.tick.task", ...),
        ("celery.beat_schedule.tick.task", ""),
        ("celery.beat_schedule.tick.every", ...),
        ("celery.beat_schedule.tick.every", 0),
        ("celery.beat_schedule.tick.every", 1.5),
        ("celery.beat_schedule.tick.cron", "* * * * *"),
        ("redis.sentinel", ["s1"]),
        ("redis.sentinel.hosts", "s1,s2"),
        ("redis.sentinel.hosts", ["s1", 2]),
        ("redis.sentinel.port", 0),
        ("redis.sentinel.quorum", 2),
        ("redis.sentinel.publish_replicas", True),
    ],
)
def test_invalid_value_is_refused_naming_its_key(dotted: str, value: object) -> None:
    base = with_value(MINIMAL, "celery.beat_schedule", {"tick": dict(TICK)})
    with pytest.raises(ConfigError) as caught:
        parse_settings(with_value(base, dotted, value))
    assert str(caught.value).startswith(f"{dotted}:")


def test_soft_limit_must_be_below_hard_limit() -> None:
    data = with_value(MINIMAL, "celery.task_soft_time_limit", 330)
    with pytest.raises(ConfigError, match=r"^celery\.task_soft_time_limit: .*task_time_limit"):
        parse_settings(data)


def test_hard_limit_must_be_below_visibility_timeout() -> None:
    data = with_value(MINIMAL, "celery.task_time_limit", 3600)
    with pytest.raises(ConfigError, match=r"^celery\.task_time_limit: .*runs twice"):
        parse_settings(data)


@pytest.mark.parametrize("key", ["ca_file", "cert_file", "key_file"])
def test_tls_needs_every_file(key: str) -> None:
    data = with_value(FULL, f"redis.tls.{key}", "")
    with pytest.raises(ConfigError, match=rf"^redis\.tls\.{key}: must be set"):
        parse_settings(data)


def test_type_error_does_not_echo_the_value() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_settings(with_value(MINIMAL, "redis.password", 123456789))
    assert "123456789" not in str(caught.value)


def test_load_settings_reads_the_file_named_by_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "config.toml"
    path.write_text('[redis]\nhost = "redis9"\npassword = "pw"\n[celery]\ndefault_queue = "q"\n')
    monkeypatch.setenv("RCBUNDLE_CONFIG", str(path))
    settings = load_settings()
    assert (settings.redis.host, settings.celery.default_queue) == ("redis9", "q")
    assert load_settings(path) == settings


def test_load_settings_names_the_file_and_the_key(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('[redis]\nhost = "redis9"\npassword = "pw"\nport = "6379"\n')
    with pytest.raises(ConfigError, match=rf"^{path}: redis\.port: must be an integer"):
        load_settings(path)


def test_missing_file_says_how_to_fix(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"not found.*RCBUNDLE_CONFIG"):
        load_settings(tmp_path / "absent.toml")


def test_unreadable_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"cannot read the config file"):
        load_settings(tmp_path)  # a directory: IsADirectoryError


def test_type_error_names_the_toml_type() -> None:
    with pytest.raises(ConfigError, match=r"^redis\.port: must be an integer, got a TOML boolean$"):
        parse_settings(with_value(MINIMAL, "redis.port", True))


def test_invalid_toml_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text("[redis\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(path)


def test_an_unset_environment_says_what_to_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RCBUNDLE_CONFIG", raising=False)
    with pytest.raises(ConfigError, match=r"^RCBUNDLE_CONFIG is not set: set it to the config"):
        load_settings()


def test_urls_point_at_broker_and_result_databases() -> None:
    conf = celery_config(parse_settings(MINIMAL))
    assert conf["broker_url"] == "redis://:secret@redis1:6379/0"
    assert conf["result_backend"] == "redis://:secret@redis1:6379/1"


def test_results_can_live_in_their_own_server() -> None:
    data = with_value(with_value(MINIMAL, "redis.result_host", "redis2"), "redis.result_port", 6380)
    conf = celery_config(parse_settings(data))
    assert conf["broker_url"] == "redis://:secret@redis1:6379/0"
    assert conf["result_backend"] == "redis://:secret@redis2:6380/1"
    # A port alone: the same host, another server.
    conf = celery_config(parse_settings(with_value(MINIMAL, "redis.result_port", 6380)))
    assert conf["result_backend"] == "redis://:secret@redis1:6380/1"
    params = _backend_params(conf)
    assert (params["host"], params["port"]) == ("redis1", 6380)


@pytest.mark.parametrize("password", ["p@ss:w/rd#1", "%41 ?&=", "ü€"])
def test_special_characters_in_credentials_survive_the_url(password: str) -> None:
    data = with_value(with_value(MINIMAL, "redis.password", password), "redis.username", "u@1")
    conf = celery_config(parse_settings(data))
    # Parsed back the way kombu (broker) and Celery's Redis backend (results) parse them.
    parts = url_to_parts(str(conf["broker_url"]))
    assert (parts.username, parts.password, parts.hostname) == ("u@1", password, "redis1")
    params = _backend_params(conf)
    assert (params["username"], params["password"], params["host"]) == ("u@1", password, "redis1")


def test_tls_uses_rediss_and_verifies_the_server() -> None:
    conf = celery_config(parse_settings(FULL))
    assert str(conf["broker_url"]).startswith("rediss://celery:secret@redis1:6380/2")
    assert str(conf["result_backend"]).startswith("rediss://celery:secret@redis1:6380/3")
    expected = {
        "ssl_cert_reqs": ssl.CERT_REQUIRED,
        "ssl_ca_certs": "/ca",
        "ssl_certfile": "/cert",
        "ssl_keyfile": "/key",
    }
    assert conf["broker_use_ssl"] == expected
    assert conf["redis_backend_use_ssl"] == expected


def test_no_tls_means_no_ssl_options() -> None:
    conf = celery_config(parse_settings(MINIMAL))
    assert "broker_use_ssl" not in conf
    assert "redis_backend_use_ssl" not in conf


# Without a socket timeout a worker blocked on a connection whose peer vanished (a network cut)
# consumed nothing for minutes; keepalive probes catch idle dead connections.
_DEAD_PEER_DETECTION = {
    "health_check_interval": 10,
    "socket_timeout": 15,
    "socket_connect_timeout": 10,
    "socket_keepalive": True,
    "socket_keepalive_options": {
        socket.TCP_KEEPIDLE: 10,
        socket.TCP_KEEPINTVL: 5,
        socket.TCP_KEEPCNT: 3,
    },
}


def test_key_prefix_applies_to_broker_and_results() -> None:
    conf = celery_config(parse_settings(FULL))
    assert conf["broker_transport_options"] == {
        "visibility_timeout": 30,
        "global_keyprefix": "app:",
        **_DEAD_PEER_DETECTION,
    }
    assert conf["result_backend_transport_options"] == {
        "visibility_timeout": 30,
        "global_keyprefix": "app:",
    }


def test_empty_key_prefix_is_left_out() -> None:
    conf = celery_config(parse_settings(MINIMAL))
    assert conf["broker_transport_options"] == {
        "visibility_timeout": 3600,
        **_DEAD_PEER_DETECTION,
    }
    assert conf["result_backend_transport_options"] == {"visibility_timeout": 3600}


def test_reliability_settings_from_the_field_notes() -> None:
    conf = celery_config(parse_settings(MINIMAL))
    assert conf["accept_content"] == ["json"]
    assert conf["result_accept_content"] == ["json"]
    assert (conf["task_serializer"], conf["result_serializer"]) == ("json", "json")
    assert conf["task_acks_late"] is True
    assert conf["task_reject_on_worker_lost"] is True
    assert conf["worker_prefetch_multiplier"] == 1
    assert (conf["task_soft_time_limit"], conf["task_time_limit"]) == (300, 330)
    assert conf["result_expires"] == 86400
    assert conf["result_extended"] is True
    # Per task instead: only the long ones pay for a STARTED write.
    assert conf["task_track_started"] is False
    assert conf["broker_connection_retry_on_startup"] is True
    # True loses tasks when Redis restarts (cancellation recorded in the same, unreachable Redis).
    assert conf["worker_cancel_long_running_tasks_on_connection_loss"] is False
    assert conf["worker_soft_shutdown_timeout"] == 10
    assert conf["worker_send_task_events"] is False
    assert conf["redis_backend_health_check_interval"] == 10
    assert (conf["redis_socket_timeout"], conf["redis_socket_connect_timeout"]) == (15, 10)
    assert conf["redis_socket_keepalive"] is True
    assert (conf["timezone"], conf["enable_utc"]) == ("UTC", True)


def test_celery_accepts_the_tls_configuration() -> None:
    # Celery refuses a rediss:// result backend without ssl_cert_reqs; building one proves it's set.
    params = _backend_params(celery_config(parse_settings(FULL)))
    assert params["ssl_cert_reqs"] == ssl.CERT_REQUIRED
    assert params["ssl_ca_certs"] == "/ca"
    assert params["password"] == "secret"


def _backend_params(conf: dict[str, object]) -> dict[str, Any]:
    """The connection parameters Celery's Redis result backend derives from conf."""
    backend = Celery("check", config_source=conf, set_as_current=False).backend
    assert isinstance(backend, RedisBackend)
    params: dict[str, Any] = backend.connparams  # type: ignore[attr-defined]  # not in the stubs
    return params


def test_no_routes_and_no_schedule_by_default() -> None:
    conf = celery_config(parse_settings(MINIMAL))
    assert conf["task_routes"] == {}
    assert conf["beat_schedule"] == {}


def test_routes_from_the_file() -> None:
    data = with_value(MINIMAL, "celery.task_routes", {"shop.sleep": "slow"})
    conf = celery_config(parse_settings(data))
    assert conf["task_routes"] == {"shop.sleep": {"queue": "slow"}}
    app = Celery("check", config_source=conf, set_as_current=False)
    assert app.amqp.router.route({}, "shop.sleep")["queue"].name == "slow"
    assert app.amqp.router.route({}, "shop.ping")["queue"].name == "celery"


def test_beat_schedule_from_the_file() -> None:
    data = with_value(
        MINIMAL, "celery.beat_schedule", {"tick": {**TICK, "queue": "io"}, "other": dict(TICK)}
    )
    schedule = celery_config(parse_settings(data))["beat_schedule"]
    assert schedule == {
        "tick": {
            "task": "shop.record",
            "schedule": 10.0,
            "options": {"expires": 10.0, "queue": "io"},
        },
        "other": {"task": "shop.record", "schedule": 10.0, "options": {"expires": 10.0}},
    }


def test_routes_and_schedule_read_from_toml(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(
        '[redis]\nhost = "r"\npassword = "pw"\n'
        '[celery.task_routes]\n"shop.process_data" = "cpu"\n'
        '[celery.beat_schedule.tick]\ntask = "shop.record"\nevery = 5\n'
    )
    settings = load_settings(path)
    assert settings.celery.task_routes == {"shop.process_data": "cpu"}
    assert settings.celery.beat_schedule["tick"].every == 5


SENTINELLED: dict[str, Any] = with_value(
    with_value(FULL, "redis.host", ...),
    "redis.sentinel",
    {"master_name": "bundle", "hosts": ["redis1", "redis2", "10.0.0.3"], "port": 26380},
)


def test_sentinels_replace_the_host() -> None:
    settings = parse_settings(SENTINELLED)
    assert settings.redis.host == ""
    assert settings.redis.sentinel.hosts == ["redis1", "redis2", "10.0.0.3"]


@pytest.mark.parametrize(
    ("dotted", "value", "named"),
    [
        ("redis.host", "", "redis.host:"),
        ("redis.sentinel.master_name", "", "redis.sentinel.master_name:"),
        ("redis.sentinel.hosts", ["redis1", " "], "redis.sentinel.hosts:"),
        ("redis.result_host", "results1", "redis.result_host:"),
    ],
)
def test_sentinel_settings_are_checked(dotted: str, value: object, named: str) -> None:
    base = SENTINELLED if dotted != "redis.host" else with_value(SENTINELLED, "redis.sentinel", ...)
    with pytest.raises(ConfigError) as caught:
        parse_settings(with_value(base, dotted, value))
    assert str(caught.value).startswith(named)


def test_sentinels_give_one_url_each_with_the_masters_login() -> None:
    conf = celery_config(parse_settings(SENTINELLED))
    assert conf["broker_url"] == (
        "sentinel://celery:secret@redis1:26380/2;sentinel://celery:secret@redis2:26380/2;"
        "sentinel://celery:secret@10.0.0.3:26380/2"
    )
    assert str(conf["result_backend"]).endswith("@10.0.0.3:26380/3")
    assert conf["broker_transport"] == "rcbundle.transport:SentinelTransport"


def test_the_sentinels_are_reached_with_tls_and_the_clients_login() -> None:
    conf = celery_config(parse_settings(SENTINELLED))
    for key in ("broker_transport_options", "result_backend_transport_options"):
        options = conf[key]
        assert isinstance(options, dict)
        assert options["master_name"] == "bundle"
        assert options["global_keyprefix"] == "app:"
        kwargs = options["sentinel_kwargs"]
        assert kwargs["username"] == "celery"
        assert kwargs["password"] == "secret"
        assert kwargs["ssl"] is True
        assert kwargs["ssl_cert_reqs"] == ssl.CERT_REQUIRED
        assert (kwargs["ssl_ca_certs"], kwargs["ssl_certfile"]) == ("/ca", "/cert")
        # Not inherited once sentinel_kwargs is set: without it a hung Sentinel hangs the client.
        # Short, and no retry: a client asks the next Sentinel instead.
        assert 0 < kwargs["socket_timeout"] <= 2
        assert 0 < kwargs["socket_connect_timeout"] <= 2
        assert kwargs["retry"].get_retries() == 0
    broker = conf["broker_transport_options"]
    assert isinstance(broker, dict)
    assert broker["health_check_interval"] > 0


def test_with_sentinel_the_masters_connections_give_up_sooner() -> None:
    # A frozen master's successor is known within seconds; each pooled connection to the old
    # one costs a socket timeout before the client asks Sentinel again.
    single = celery_config(
        parse_settings(
            with_value(with_value(SENTINELLED, "redis.sentinel", ...), "redis.host", "r")
        )
    )
    conf = celery_config(parse_settings(SENTINELLED))
    broker = conf["broker_transport_options"]
    assert isinstance(broker, dict)
    assert broker["socket_timeout"] == broker["socket_connect_timeout"] == 5
    assert conf["redis_socket_timeout"] == conf["redis_socket_connect_timeout"] == 5
    assert (single["redis_socket_timeout"], single["redis_socket_connect_timeout"]) == (15, 10)
    backend = Celery("check", config_source=conf, set_as_current=False).backend
    params: dict[str, Any] = backend.connparams  # type: ignore[attr-defined]  # not in the stubs
    assert params["socket_timeout"] == params["socket_connect_timeout"] == 5


def test_with_sentinel_a_send_waits_out_a_failover_before_it_fails() -> None:
    single = celery_config(
        parse_settings(
            with_value(with_value(SENTINELLED, "redis.sentinel", ...), "redis.host", "r")
        )
    )
    assert "task_publish_retry_policy" not in single  # Celery's own
    policy = celery_config(parse_settings(SENTINELLED))["task_publish_retry_policy"]
    assert isinstance(policy, dict)
    assert policy == SENTINEL_PUBLISH_RETRY_POLICY
    pauses, interval = 0.0, float(policy["interval_start"])
    for _ in range(int(policy["max_retries"])):  # kombu's retry_over_time
        pauses += min(interval, float(policy["interval_max"]))
        interval += float(policy["interval_step"])
    assert 8 <= pauses <= 15


def test_celery_builds_a_sentinel_result_backend_that_follows_the_master() -> None:
    conf = celery_config(parse_settings(SENTINELLED))
    backend = Celery("check", config_source=conf, set_as_current=False).backend
    assert type(backend).__name__ == "SentinelBackend"
    params: dict[str, Any] = backend.connparams  # type: ignore[attr-defined]  # not in the stubs
    assert [(h["host"], h["port"]) for h in params["hosts"]] == [
        ("redis1", 26380),
        ("redis2", 26380),
        ("10.0.0.3", 26380),
    ]
    assert (params["username"], params["password"], params["db"]) == ("celery", "secret", 3)
    # The master's connections are Sentinel-managed TLS ones, so they follow a failover.
    assert params["connection_class"].__name__ == "SentinelManagedSSLConnection"


def test_without_tls_the_sentinels_get_no_ssl_options() -> None:
    data = with_value(SENTINELLED, "redis.tls", {"enabled": False})
    kwargs = celery_config(parse_settings(data))["broker_transport_options"]["sentinel_kwargs"]  # type: ignore[index]
    assert "ssl" not in kwargs
    assert "ssl_ca_certs" not in kwargs


def test_a_durable_publish_waits_for_the_replicas_the_config_names() -> None:
    data = with_value(SENTINELLED, "redis.sentinel.publish_replicas", 1)
    options = celery_config(parse_settings(data))["broker_transport_options"]
    assert isinstance(options, dict)
    assert options["rcbundle_publish_replicas"] == 1
    plain = celery_config(parse_settings(SENTINELLED))["broker_transport_options"]
    assert plain["rcbundle_publish_replicas"] == 0  # type: ignore[index]


@pytest.mark.parametrize("replicas", [-1, 3])
def test_publish_replicas_must_leave_one_server_for_the_master(replicas: int) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_settings(with_value(SENTINELLED, "redis.sentinel.publish_replicas", replicas))
    assert str(caught.value).startswith("redis.sentinel.publish_replicas:")


def test_a_result_write_that_meets_a_lost_connection_is_retried() -> None:
    conf = celery_config(parse_settings(MINIMAL))
    retries = conf["result_backend_max_retries"]
    assert isinstance(retries, int)
    assert 5 <= retries < 100
    backend: Any = Celery("check", config_source=conf, set_as_current=False).backend
    assert backend.always_retry is True
    assert backend.exception_safe_to_retry(redis.TimeoutError())
