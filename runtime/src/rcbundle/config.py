"""The one place configuration is read: a TOML file written by the Ansible role."""

import os
import socket
import ssl
import tomllib
import typing
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import quote

from redis.backoff import NoBackoff
from redis.retry import Retry

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

# The roles write /etc/APP/config.toml and set this in every unit's environment.
ENV_VAR = "RCBUNDLE_CONFIG"
# The broker transport option naming the worker node that owns what a channel fetches
# (rcbundle.transport); rcbundle.loader sets it in `celery worker` to the node's name.
OWNER_OPTION = "rcbundle_owner"
# The broker transport option naming how many replicas must hold a published message before
# the publish returns (rcbundle.transport: WAIT on the publishing connection); 0: none.
PUBLISH_REPLICAS_OPTION = "rcbundle_publish_replicas"


class ConfigError(ValueError):
    """Invalid configuration; the message starts with the dotted key at fault."""


@dataclass(frozen=True, kw_only=True)
class TlsSettings:
    enabled: bool = False
    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""


@dataclass(frozen=True, kw_only=True)
class SentinelSettings:
    """Redis Sentinel: the Sentinels to ask which server is the master, and its name there.

    No hosts: no Sentinel, the client connects to redis.host. Clients log in to the Sentinels
    with redis.username and redis.password, over TLS when redis.tls is on, like the servers.
    """

    master_name: str = ""
    hosts: list[str] = field(default_factory=list)
    port: int = 26379
    # A publish returns once this many replicas hold the message (0: once the master does).
    publish_replicas: int = 0


@dataclass(frozen=True, kw_only=True)
class RedisSettings:
    password: str
    # The server's name or address; unused (and may be left out) when sentinel names hosts.
    host: str = ""
    port: int = 6379
    username: str = ""
    broker_db: int = 0
    result_db: int = 1
    # A separate Redis instance for results ("" and 0: the broker's host and port).
    result_host: str = ""
    result_port: int = 0
    key_prefix: str = ""
    tls: TlsSettings = field(default_factory=TlsSettings)
    sentinel: SentinelSettings = field(default_factory=SentinelSettings)


@dataclass(frozen=True, kw_only=True)
class ScheduleEntry:
    """One periodic task run by the (single) beat process."""

    task: str
    every: int
    queue: str = ""  # "" = wherever celery.task_routes sends the task


@dataclass(frozen=True, kw_only=True)
class CelerySettings:
    task_soft_time_limit: int = 300
    task_time_limit: int = 330
    visibility_timeout: int = 3600
    result_expires: int = 86400
    worker_prefetch_multiplier: int = 1
    worker_soft_shutdown_timeout: int = 10
    default_queue: str = "celery"
    # task name -> queue. Producers and workers read the same table, so they agree.
    task_routes: dict[str, str] = field(default_factory=dict)
    beat_schedule: dict[str, ScheduleEntry] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class Settings:
    redis: RedisSettings
    celery: CelerySettings = field(default_factory=CelerySettings)


_T = TypeVar("_T", bound="DataclassInstance")

# Seconds between PINGs on idle connections, so a silently dropped connection is noticed.
HEALTH_CHECK_INTERVAL = 10
# A connection whose peer vanished without a word (a network cut, a changed address) otherwise
# stays open forever: a worker blocked in a command on it consumed nothing again for minutes
# (RELIABILITY.md, network cut). A bound on every command, and kernel keepalive probes on idle
# connections, turn it into an error the worker reconnects from.
SOCKET_TIMEOUT = 15
SOCKET_CONNECT_TIMEOUT = 10
KEEPALIVE_OPTIONS = {socket.TCP_KEEPIDLE: 10, socket.TCP_KEEPINTVL: 5, socket.TCP_KEEPCNT: 3}
# A Sentinel answers at once or not at all. A host that hangs (frozen, or its network gone
# quiet) still completes the TCP handshake in its kernel, then never answers: with the master's
# timeouts and redis-py's default retries (3, with backoff) each new connection spent about a
# minute on it before asking the next Sentinel, and the workers consumed nothing meanwhile. So
# the Sentinels get a short timeout and no retry: the client asks the next one.
SENTINEL_TIMEOUT = 2
# With Sentinel a master that stops answering has a successor: a command or a connection it
# leaves unanswered fails after this (not SOCKET_TIMEOUT), and the client asks Sentinel again.
# Each pooled connection still leading to a frozen old master costs one such wait.
SENTINEL_MASTER_TIMEOUT = 5
# Result writes retried after a connection error, with backoff up to 5 s: about a minute.
RESULT_RETRIES = 15
# Celery's publish retry policy with Sentinel. A send that meets no master (a killed server
# refuses the connection; Sentinel reports the master down until it promotes a replica) makes
# kombu reconnect, and kombu pauses only between reconnects that fail: with Celery's default
# (3 retries, 0.2 s apart) sends were refused for the seconds before the promotion. These
# pauses add up to about 10 s (down-after 5 s, then the promotion); a send waits that long at
# most before it fails for its caller.
SENTINEL_PUBLISH_RETRY_POLICY = {
    "max_retries": 12,
    "interval_start": 0,
    "interval_step": 0.5,
    "interval_max": 1.0,
}

_TYPE_WORDS = {int: "an integer", str: "a string", bool: "true or false"}
_TOML_KINDS = {
    bool: "boolean",
    int: "integer",
    float: "float",
    str: "string",
    dict: "table",
    list: "array",
}


def load_settings(path: Path | None = None) -> Settings:
    """Read and validate the TOML file at path, else at $RCBUNDLE_CONFIG."""
    if path is None:
        named = os.environ.get(ENV_VAR)
        if not named:
            raise ConfigError(
                f"{ENV_VAR} is not set: set it to the config file the roles wrote "
                "(/etc/APP/config.toml on the worker hosts)"
            )
        path = Path(named)
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: config file not found; create it or set {ENV_VAR}") from exc
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config file: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    try:
        return parse_settings(data)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from exc


def parse_settings(data: Mapping[str, object]) -> Settings:
    settings = _build(Settings, data, "")
    _check_ranges(settings)
    return settings


def _build(cls: type[_T], table: Mapping[str, object], prefix: str) -> _T:
    # Deriving the schema from the dataclasses keeps key names, types and defaults in one place.
    hints = typing.get_type_hints(cls)
    known = [f.name for f in fields(cls)]
    for key in table:
        if key not in known:
            raise ConfigError(
                f"{prefix}{key}: unknown key; check its spelling (known here: {', '.join(known)})"
            )
    values: dict[str, Any] = {}
    for f in fields(cls):
        dotted = prefix + f.name
        kind = hints[f.name]
        if f.name not in table:
            if f.default is MISSING and f.default_factory is MISSING:
                what = f"table [{dotted}]" if is_dataclass(kind) else "key"
                raise ConfigError(f"{dotted}: required {what} is missing; add it")
            continue
        value = table[f.name]
        if typing.get_origin(kind) is dict:
            values[f.name] = _build_table(typing.get_args(kind)[1], value, dotted)
        elif typing.get_origin(kind) is list:
            values[f.name] = _build_list(typing.get_args(kind)[0], value, dotted)
        elif isinstance(kind, type) and is_dataclass(kind):
            if not isinstance(value, dict):
                raise ConfigError(f"{dotted}: must be a table ([{dotted}]), not a single value")
            values[f.name] = _build(kind, value, dotted + ".")
        elif type(value) is not kind:
            # Exact type match: TOML true must not pass as the integer 1, nor 8.0 as 8.
            raise ConfigError(
                f"{dotted}: must be {_TYPE_WORDS[kind]}, "
                f"got a TOML {_TOML_KINDS.get(type(value), type(value).__name__)}"
            )
        else:
            values[f.name] = value
    return cls(**values)


def _build_table(kind: object, value: object, dotted: str) -> dict[str, Any]:
    # A table whose keys the user names (task names, schedule entries), all of one kind.
    if not isinstance(value, dict):
        raise ConfigError(f"{dotted}: must be a table ([{dotted}]), not a single value")
    out: dict[str, Any] = {}
    for key, item in value.items():
        if isinstance(kind, type) and is_dataclass(kind):
            if not isinstance(item, dict):
                raise ConfigError(f"{dotted}.{key}: must be a table, not a single value")
            out[key] = _build(kind, item, f"{dotted}.{key}.")
        elif isinstance(kind, type) and type(item) is not kind:
            raise ConfigError(
                f"{dotted}.{key}: must be {_TYPE_WORDS[kind]}, "
                f"got a TOML {_TOML_KINDS.get(type(item), type(item).__name__)}"
            )
        else:
            out[key] = item
    return out


def _build_list(kind: type, value: object, dotted: str) -> list[Any]:
    # An array of plain values, all of one kind (the Sentinels' host names).
    if not isinstance(value, list):
        raise ConfigError(f"{dotted}: must be an array ([...]), not a single value")
    for index, item in enumerate(value):
        if type(item) is not kind:
            raise ConfigError(
                f"{dotted}: item {index + 1} must be {_TYPE_WORDS[kind]}, "
                f"got a TOML {_TOML_KINDS.get(type(item), type(item).__name__)}"
            )
    return list(value)


def _check_ranges(settings: Settings) -> None:
    redis, celery = settings.redis, settings.celery
    sentinel = redis.sentinel
    if not 1 <= sentinel.port <= 65535:
        raise ConfigError(f"redis.sentinel.port: {sentinel.port} is not a TCP port; use 1..65535")
    if sentinel.hosts:
        if not sentinel.master_name:
            raise ConfigError(
                "redis.sentinel.master_name: must not be empty when redis.sentinel.hosts names "
                "Sentinels; give the name they monitor the master under"
            )
        if not 0 <= sentinel.publish_replicas < len(sentinel.hosts):
            raise ConfigError(
                f"redis.sentinel.publish_replicas: {sentinel.publish_replicas} must be between 0 "
                f"and {len(sentinel.hosts) - 1} (the replicas of {len(sentinel.hosts)} servers)"
            )
        if not all(host.strip() for host in sentinel.hosts):
            raise ConfigError("redis.sentinel.hosts: a host name is empty; remove it or fill it")
        if redis.result_host or redis.result_port:
            raise ConfigError(
                "redis.result_host: a separate results server is not supported with Sentinel; "
                "leave result_host and result_port out (results use the master's result_db)"
            )
    elif not redis.host.strip():
        raise ConfigError(
            "redis.host: must not be empty; set the Redis server's name or address "
            "(or name the Sentinels in [redis.sentinel])"
        )
    if not redis.password:
        raise ConfigError("redis.password: must not be empty; Redis must require authentication")
    if not 1 <= redis.port <= 65535:
        raise ConfigError(f"redis.port: {redis.port} is not a TCP port; use 1..65535")
    if not 0 <= redis.result_port <= 65535:
        raise ConfigError(
            f"redis.result_port: {redis.result_port} is not a TCP port; "
            "use 1..65535, or 0 for the broker's port"
        )
    for key in ("broker_db", "result_db"):
        db = getattr(redis, key)
        if not 0 <= db <= 15:
            raise ConfigError(f"redis.{key}: {db} is not a default Redis database; use 0..15")
    if redis.tls.enabled:
        for key in ("ca_file", "cert_file", "key_file"):
            if not getattr(redis.tls, key):
                raise ConfigError(
                    f"redis.tls.{key}: must be set when redis.tls.enabled is true "
                    "(Redis requires client certificates); give a file path or disable TLS"
                )
    for key in (
        "task_soft_time_limit",
        "task_time_limit",
        "visibility_timeout",
        "result_expires",
        "worker_prefetch_multiplier",
    ):
        if getattr(celery, key) < 1:
            raise ConfigError(f"celery.{key}: must be at least 1")
    if celery.worker_soft_shutdown_timeout < 0:
        raise ConfigError("celery.worker_soft_shutdown_timeout: must be 0 or more")
    if not celery.default_queue:
        raise ConfigError("celery.default_queue: must not be empty; name the queue")
    for task, queue in celery.task_routes.items():
        if not queue:
            raise ConfigError(f"celery.task_routes.{task}: must name a queue, not be empty")
    for name, entry in celery.beat_schedule.items():
        if not entry.task:
            raise ConfigError(f"celery.beat_schedule.{name}.task: must name a task")
        if entry.every < 1:
            raise ConfigError(f"celery.beat_schedule.{name}.every: must be at least 1 (seconds)")
    if celery.task_soft_time_limit >= celery.task_time_limit:
        raise ConfigError(
            f"celery.task_soft_time_limit: {celery.task_soft_time_limit} must be below "
            f"celery.task_time_limit ({celery.task_time_limit}), or the task never gets its "
            "warning; lower it or raise the hard limit"
        )
    if celery.task_time_limit >= celery.visibility_timeout:
        raise ConfigError(
            f"celery.task_time_limit: {celery.task_time_limit} must be below "
            f"celery.visibility_timeout ({celery.visibility_timeout}), or a task still running "
            "when the timeout expires is delivered again and runs twice; lower the limit or "
            "raise the timeout"
        )


def celery_config(settings: Settings) -> dict[str, object]:
    """Celery settings for this deployment; each choice is explained where it is set below, and
    in the README ("What the defaults protect against")."""
    redis, celery = settings.redis, settings.celery
    transport: dict[str, object] = {"visibility_timeout": celery.visibility_timeout}
    if redis.key_prefix:
        # Both broker and results under one prefix, so a Redis ACL can confine the user to it.
        transport["global_keyprefix"] = redis.key_prefix
    transport_options: dict[str, object] = {
        **transport,
        "health_check_interval": HEALTH_CHECK_INTERVAL,
        "socket_timeout": SOCKET_TIMEOUT,
        "socket_connect_timeout": SOCKET_CONNECT_TIMEOUT,
        "socket_keepalive": True,
        "socket_keepalive_options": dict(KEEPALIVE_OPTIONS),
    }
    conf: dict[str, object] = {
        "broker_url": redis_url(settings, redis.broker_db),
        # kombu's Redis transport with a fetch that cannot lose a message (rcbundle.transport).
        "broker_transport": "rcbundle.transport:Transport",
        "result_backend": redis_url(settings, redis.result_db, results=True),
        "broker_transport_options": transport_options,
        "result_backend_transport_options": dict(transport),
        "redis_backend_health_check_interval": HEALTH_CHECK_INTERVAL,
        "redis_socket_timeout": SOCKET_TIMEOUT,
        "redis_socket_connect_timeout": SOCKET_CONNECT_TIMEOUT,
        "redis_socket_keepalive": True,
        # A result write that meets a lost connection (a Redis restart, a failover: the pooled
        # connection still leads to the old master) is retried on a new one, through Sentinel to
        # the new master, instead of leaving a task that ran without its result.
        "result_backend_always_retry": True,
        "result_backend_max_retries": RESULT_RETRIES,
        "result_backend_max_sleep_between_retries_ms": 5000,
        "broker_connection_retry_on_startup": True,
        # Pickle would let anyone who can write to the broker run code on the workers.
        "accept_content": ["json"],
        "task_serializer": "json",
        "result_serializer": "json",
        "result_accept_content": ["json"],
        # At-least-once delivery: a task whose worker dies is redelivered, not lost.
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": celery.worker_prefetch_multiplier,
        "task_soft_time_limit": celery.task_soft_time_limit,
        "task_time_limit": celery.task_time_limit,
        "worker_soft_shutdown_timeout": celery.worker_soft_shutdown_timeout,
        # Off on purpose. On a connection loss Celery 5.7 cancels running acks_late tasks and
        # records each as "retry" in the result backend; when that write fails too (Redis is the
        # backend, and it is the Redis that went away), the task is then handled as revoked and
        # its message acknowledged: lost (RELIABILITY.md, Redis restart). Left running, a task
        # completes and at worst runs once more, which at-least-once delivery allows.
        "worker_cancel_long_running_tasks_on_connection_loss": False,
        "result_expires": celery.result_expires,
        # Stores the worker's name with each result, so a client can tell who ran a task.
        "result_extended": True,
        # No STARTED state by default: writing it costs each task a Redis round trip; in a loopback
        # trial it roughly halved two solo nodes' trivial-task throughput with results (see the
        # method in BENCHMARKS.md). Long tasks opt in with @app.task(track_started=True).
        "task_track_started": False,
        "worker_send_task_events": False,
        "task_default_queue": celery.default_queue,
        "task_routes": {task: {"queue": queue} for task, queue in celery.task_routes.items()},
        "beat_schedule": {
            name: {
                "task": entry.task,
                "schedule": float(entry.every),
                # A run still queued when the next is due is dropped, not stacked up.
                "options": {"expires": float(entry.every)}
                | ({"queue": entry.queue} if entry.queue else {}),
            }
            for name, entry in celery.beat_schedule.items()
        },
        "timezone": "UTC",
        "enable_utc": True,
    }
    ssl_options = _ssl_options(redis.tls)
    if ssl_options:
        conf["broker_use_ssl"] = ssl_options
        conf["redis_backend_use_ssl"] = dict(ssl_options)
    if redis.sentinel.hosts:
        # Who the master is comes from the Sentinels; the login and TLS towards them come only
        # from sentinel_kwargs (kombu and Celery pass nothing else on to them, not even the
        # socket timeout), and are the client's own.
        sentinel = {
            "master_name": redis.sentinel.master_name,
            "sentinel_kwargs": {
                "username": redis.username or None,
                "password": redis.password,
                "socket_timeout": SENTINEL_TIMEOUT,
                "socket_connect_timeout": SENTINEL_TIMEOUT,
                "retry": Retry(NoBackoff(), 0),
                **({"ssl": True, **ssl_options} if ssl_options else {}),
            },
        }
        timeouts = {
            "socket_timeout": SENTINEL_MASTER_TIMEOUT,
            "socket_connect_timeout": SENTINEL_MASTER_TIMEOUT,
        }
        conf["broker_transport"] = "rcbundle.transport:SentinelTransport"
        conf["broker_transport_options"] = {
            **transport_options,
            **timeouts,
            **sentinel,
            PUBLISH_REPLICAS_OPTION: redis.sentinel.publish_replicas,
        }
        conf["result_backend_transport_options"] = {**transport, **sentinel}
        conf["redis_socket_timeout"] = SENTINEL_MASTER_TIMEOUT
        conf["redis_socket_connect_timeout"] = SENTINEL_MASTER_TIMEOUT
        conf["task_publish_retry_policy"] = dict(SENTINEL_PUBLISH_RETRY_POLICY)
    return conf


def _ssl_options(tls: TlsSettings) -> dict[str, object]:
    """redis-py's TLS arguments for the client certificate and the CA, or {} without TLS."""
    if not tls.enabled:
        return {}
    return {
        "ssl_cert_reqs": ssl.CERT_REQUIRED,
        "ssl_ca_certs": tls.ca_file,
        "ssl_certfile": tls.cert_file,
        "ssl_keyfile": tls.key_file,
    }


def redis_url(settings: Settings, db: int, *, results: bool = False) -> str:
    """A redis:// or rediss:// URL; credentials are quoted so @ : / # in them survive.

    With results=True, the result store's: its own host and port when the config names them.
    With Sentinels, one sentinel:// URL per Sentinel joined by ";" (kombu's and Celery's form);
    the credentials in each are the master's, TLS comes from broker_use_ssl and
    redis_backend_use_ssl.
    """
    redis = settings.redis
    user = quote(redis.username, safe="")
    password = quote(redis.password, safe="")
    if redis.sentinel.hosts:
        return ";".join(
            f"sentinel://{user}:{password}@{_bracketed(host)}:{redis.sentinel.port}/{db}"
            for host in redis.sentinel.hosts
        )
    scheme = "rediss" if redis.tls.enabled else "redis"
    host = (redis.result_host if results else "") or redis.host
    port = (redis.result_port if results else 0) or redis.port
    return f"{scheme}://{user}:{password}@{_bracketed(host)}:{port}/{db}"


def _bracketed(host: str) -> str:
    return f"[{host}]" if ":" in host else host  # IPv6 literal
