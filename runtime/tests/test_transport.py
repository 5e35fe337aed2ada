"""rcbundle.transport without a server: the keyspace subscription's bookkeeping, its reading of
events and its health checks, on a PubSub stand-in."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, ClassVar, cast

import pytest
import redis
import redis.connection
import redis.sentinel

from rcbundle import transport

WANTED = b"__keyspace@0__:queue"
OTHER = b"__keyspace@0__:somebody-elses"


class FakeConnection:
    host, port = "127.0.0.1", 6379
    _sock = object()

    def can_read(self, timeout: float = 0) -> bool:
        return False


class FakePubSub:
    """What KeyspaceSubscription uses of redis-py's PubSub."""

    made: ClassVar[list[FakePubSub]] = []

    def __init__(self, pool: object) -> None:
        self.channels: set[bytes] = set()
        self.inbox: list[dict[str, Any] | Exception] = []
        self.connection: FakeConnection | None = FakeConnection()
        self.health_check_response_counter = 0
        self.health_checks = 0
        self.closed = False
        self.refuse: Exception | None = None
        FakePubSub.made.append(self)

    @property
    def subscribed(self) -> bool:
        return bool(self.channels)

    def subscribe(self, *channels: bytes) -> None:
        if self.refuse is not None:
            raise self.refuse
        self.channels |= set(channels)

    def unsubscribe(self, *channels: bytes) -> None:
        self.channels -= set(channels)

    def get_message(self, timeout: float = 0) -> dict[str, Any] | None:
        if not self.inbox:
            return None
        item = self.inbox.pop(0)
        if isinstance(item, Exception):
            raise item
        return item

    def check_health(self) -> None:
        self.health_checks += 1

    def close(self) -> None:
        self.closed = True
        self.connection = None


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    now = [1000.0]
    monkeypatch.setattr(transport, "monotonic", lambda: now[0])
    monkeypatch.setattr(transport, "PubSub", FakePubSub)
    FakePubSub.made.clear()
    return now


def _subscription(interval: float = 10) -> transport.KeyspaceSubscription:
    return transport.KeyspaceSubscription(cast(redis.ConnectionPool, None), interval)


def _pubsub(subscription: transport.KeyspaceSubscription) -> FakePubSub:
    assert subscription.pubsub is not None
    return cast(FakePubSub, subscription.pubsub)


def _event(kind: str, channel: bytes = WANTED, data: bytes | int = 1) -> dict[str, Any]:
    return {"type": kind, "channel": channel, "data": data, "pattern": None}


def test_it_subscribes_to_what_is_watched_and_drops_its_connection_when_nothing_is(
    clock: list[float],
) -> None:
    subscription = _subscription()
    subscription.watch([WANTED, OTHER])
    pubsub = _pubsub(subscription)
    assert pubsub.channels == {WANTED, OTHER}
    subscription.watch([WANTED])
    assert pubsub.channels == {WANTED}
    assert subscription.socket is FakeConnection._sock
    subscription.watch([])
    assert subscription.pubsub is None
    assert pubsub.closed
    assert subscription.socket is None
    subscription.watch([WANTED])
    assert len(FakePubSub.made) == 2
    assert _pubsub(subscription).channels == {WANTED}


@pytest.mark.parametrize(
    ("events", "woken"),
    [
        ([_event("subscribe")], True),  # what came before it went unannounced
        ([_event("message", data=b"lpush")], True),  # kombu's publish
        ([_event("message", data=b"rpush")], True),  # kombu's restore
        ([_event("message", data=b"del"), _event("message", data=b"expire")], False),
        ([_event("message", OTHER, b"lpush"), _event("subscribe", OTHER)], False),
        ([_event("unsubscribe")], False),
        ([], False),
    ],
    ids=["confirmation", "lpush", "rpush", "other-events", "unwatched", "unsubscribe", "none"],
)
def test_only_a_push_onto_a_watched_key_or_a_confirmation_wakes(
    clock: list[float], events: list[dict[str, Any]], woken: bool
) -> None:
    subscription = _subscription()
    subscription.watch([WANTED])
    _pubsub(subscription).inbox.extend(events)
    assert subscription.read() is woken
    assert not _pubsub(subscription).inbox  # everything that arrived is read


def test_a_connection_that_fails_wakes_once_then_comes_back_after_a_growing_pause(
    clock: list[float], caplog: pytest.LogCaptureFixture
) -> None:
    subscription = _subscription()
    subscription.watch([WANTED])
    first = _pubsub(subscription)
    first.inbox.append(redis.ConnectionError("Connection closed by server."))
    assert subscription.read() is True  # a message may have come meanwhile: fetch
    assert subscription.pubsub is None
    assert first.closed
    assert "keyspace subscriber lost its connection (ConnectionError" in caplog.text
    subscription.tick()
    assert subscription.pubsub is None  # not before its pause
    pauses = []
    for _ in range(8):
        pauses.append(round(subscription._retry_at - clock[0], 3))
        clock[0] = subscription._retry_at - 0.01
        subscription.tick()
        assert subscription.pubsub is None
        clock[0] += 0.01
        subscription.tick()
        _pubsub(subscription).inbox.append(redis.ConnectionError("refused"))
        subscription.read()
    assert pauses[:4] == [0.1, 0.2, 0.4, 0.8]
    assert pauses[-1] == transport.BACKOFF_SECONDS[1]
    # A confirmed subscription is a working connection again: the next pause is the first.
    clock[0] = subscription._retry_at
    subscription.tick()
    _pubsub(subscription).inbox.append(_event("subscribe"))
    assert subscription.read()
    _pubsub(subscription).inbox.append(redis.ConnectionError("again"))
    subscription.read()
    assert subscription._retry_at - clock[0] == pytest.approx(transport.BACKOFF_SECONDS[0])


def test_a_refused_subscription_is_a_failure_like_any_other(clock: list[float]) -> None:
    subscription = _subscription()
    real_init = FakePubSub.__init__

    def refusing(self: FakePubSub, pool: object) -> None:
        real_init(self, pool)
        self.refuse = redis.exceptions.NoPermissionError("no channel permission")

    FakePubSub.__init__ = refusing  # type: ignore[method-assign]
    try:
        subscription.watch([WANTED])
    finally:
        FakePubSub.__init__ = real_init  # type: ignore[method-assign]
    assert subscription.pubsub is None
    assert FakePubSub.made[0].closed
    clock[0] += transport.BACKOFF_SECONDS[0]
    subscription.tick()
    assert _pubsub(subscription).channels == {WANTED}


def test_health_is_checked_each_interval_and_unanswered_pings_drop_the_connection(
    clock: list[float],
) -> None:
    subscription = _subscription(interval=10)
    subscription.watch([WANTED])
    pubsub = _pubsub(subscription)
    subscription.tick()
    assert pubsub.health_checks == 0  # not due yet
    clock[0] += 10
    subscription.tick()
    assert pubsub.health_checks == 1
    pubsub.health_check_response_counter = transport.MISSED_PINGS_MAX - 1
    clock[0] += 10
    subscription.tick()
    assert _pubsub(subscription) is pubsub  # one PING may be on its way back
    pubsub.health_check_response_counter = transport.MISSED_PINGS_MAX
    clock[0] += 10
    subscription.tick()
    assert subscription.pubsub is None
    assert pubsub.closed


def test_without_a_health_check_interval_nothing_is_pinged(clock: list[float]) -> None:
    subscription = _subscription(interval=0)
    subscription.watch([WANTED])
    clock[0] += 3600
    subscription.tick()
    assert _pubsub(subscription).health_checks == 0


def test_a_forked_child_forgets_the_parents_connection_without_touching_it(
    clock: list[float],
) -> None:
    subscription = _subscription()
    subscription.watch([WANTED])
    pubsub = _pubsub(subscription)
    subscription.after_fork_in_child()
    assert subscription.pubsub is None
    assert not pubsub.closed
    assert pubsub.channels == {WANTED}
    clock[0] += 60
    subscription.tick()
    assert subscription.pubsub is None  # nothing is watched until the child's channel asks


class _PollConnection:
    host, port = "10.0.0.1", 6379

    def __init__(self, master: tuple[str, int] | None) -> None:
        self._sock = object()
        self.connection_pool = SimpleNamespace(master_address=master)
        self.dropped = False

    def disconnect(self) -> None:
        self.dropped = True
        self._sock = None


@pytest.mark.parametrize(
    ("master", "dropped"),
    [(("10.0.0.2", 6379), True), (("10.0.0.1", 6379), False), (None, False)],
)
def test_a_poll_connection_still_on_an_old_master_is_dropped(
    master: tuple[str, int] | None, dropped: bool
) -> None:
    # Sentinel's pool knows the master moved (rcbundle.sentinel): a frozen old master would
    # never end the wait, so the next poll start drops the connection and kombu reconnects.
    connection = _PollConnection(master)
    channel = SimpleNamespace(_in_poll=connection)
    transport.ReliableFetch._leave_an_old_master(channel)  # type: ignore[arg-type]
    assert connection.dropped is dropped


@pytest.mark.parametrize(
    ("error", "moving"),
    [
        (transport.NoReplicasError("NOREPLICAS Not enough good replicas to write."), True),
        (redis.sentinel.MasterNotFoundError("No master found for 'bundle'"), True),
        (redis.ConnectionError(transport.SENTINEL_READONLY_MESSAGE), True),
        (redis.ConnectionError("Error 111 connecting to redis1:6379. Connection refused."), False),
        (redis.AuthenticationError("invalid username-password pair"), False),
        (transport.PublishNotReplicated("reached 0 of the 1 replicas"), False),
    ],
)
def test_a_master_changing_hands_is_told_from_other_connection_errors(
    error: BaseException, moving: bool
) -> None:
    assert transport.master_moving(error) is moving


def test_redis_py_still_reports_a_demoted_master_as_master_moving(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The message is redis-py's (rcbundle.versions guards its series): READONLY on a
    # connection of a master pool becomes a ConnectionError saying so.
    def readonly(*_: object, **__: object) -> object:
        raise redis.ReadOnlyError("You can't write against a read only replica.")

    monkeypatch.setattr(redis.connection.Connection, "read_response", readonly)
    proxy = SimpleNamespace(is_master=True)
    connection = cast(Any, redis.sentinel.SentinelManagedConnection)(connection_pool=proxy)
    with pytest.raises(redis.ConnectionError) as caught:
        connection.read_response()
    assert transport.master_moving(caught.value)


class _Publisher:
    """A channel stand-in whose publishes fail with the given errors, then succeed."""

    def __init__(self, *errors: BaseException) -> None:
        self.errors = list(errors)
        self.sent = 0

    def _put_once(self, queue: str, message: dict[str, Any], **kwargs: object) -> None:
        self.sent += 1
        if self.errors:
            raise self.errors.pop(0)


def test_a_publish_is_sent_again_while_the_master_changes_hands(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(transport, "sleep", lambda _: None)
    publisher = _Publisher(
        redis.ConnectionError(transport.SENTINEL_READONLY_MESSAGE),
        transport.NoReplicasError("NOREPLICAS Not enough good replicas to write."),
    )
    transport.ReliableFetch._put(publisher, "celery", {})  # type: ignore[arg-type]
    assert publisher.sent == 3


def test_other_publish_errors_and_a_master_that_stays_away_are_raised(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(transport, "sleep", lambda _: None)
    monkeypatch.setattr(transport, "_moving", transport._MasterMoving())
    refused = _Publisher(redis.ConnectionError("Connection refused."))
    with pytest.raises(redis.ConnectionError):
        transport.ReliableFetch._put(refused, "celery", {})  # type: ignore[arg-type]
    assert refused.sent == 1  # kombu's own retries take it from here
    clock = iter(range(0, 1000, 3))
    monkeypatch.setattr(transport, "monotonic", lambda: float(next(clock)))
    stuck = _Publisher(*[transport.NoReplicasError("NOREPLICAS") for _ in range(100)])
    with pytest.raises(transport.NoReplicasError):
        transport.ReliableFetch._put(stuck, "celery", {})  # type: ignore[arg-type]
    assert 1 < stuck.sent < 10


def _clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """A fake monotonic clock that sleep() moves on."""
    now = [0.0]
    monkeypatch.setattr(transport, "monotonic", lambda: now[0])
    monkeypatch.setattr(transport, "sleep", lambda seconds: now.__setitem__(0, now[0] + seconds))
    monkeypatch.setattr(transport, "_moving", transport._MasterMoving())
    return now


@pytest.mark.parametrize("reconnect", [0.05, 3.0, 9.0])
def test_kombus_retries_of_a_master_that_keeps_refusing_do_not_each_wait_again(
    monkeypatch: pytest.MonkeyPatch, reconnect: float
) -> None:
    # Every replica gone: the master refuses every write. kombu retries a failed publish after
    # reconnecting, 12 times with the bundle's policy, at once when the master answers, seconds
    # later when a Sentinel or a server does not (a flapping connection). The send waits about
    # MASTER_MOVING_SECONDS in all, not each retry that long again.
    now = _clock(monkeypatch)
    stuck = _Publisher(*[transport.NoReplicasError("NOREPLICAS") for _ in range(1000)])
    for _ in range(13):
        with pytest.raises(transport.NoReplicasError):
            transport.ReliableFetch._put(stuck, "celery", {})  # type: ignore[arg-type]
        now[0] += reconnect
    waited = now[0] - 13 * reconnect
    assert transport.MASTER_MOVING_SECONDS - 1 <= waited <= transport.MASTER_MOVING_SECONDS + 1
    # Every retry still tried its write: one the master takes goes through at once.
    tries = stuck.sent
    transport.ReliableFetch._put(_Publisher(), "celery", {})  # type: ignore[arg-type]
    assert stuck.sent == tries


def test_a_later_move_of_the_master_is_waited_for_again(monkeypatch: pytest.MonkeyPatch) -> None:
    now = _clock(monkeypatch)
    stuck = _Publisher(*[transport.NoReplicasError("NOREPLICAS") for _ in range(1000)])
    with pytest.raises(transport.NoReplicasError):
        transport.ReliableFetch._put(stuck, "celery", {})  # type: ignore[arg-type]
    # Quiet for longer than a wait: the next refusal starts a new one, and the send lands once
    # the master takes writes.
    now[0] += transport.MASTER_MOVING_SECONDS + 1
    started = now[0]
    back = _Publisher(*[transport.NoReplicasError("NOREPLICAS") for _ in range(4)])
    transport.ReliableFetch._put(back, "celery", {})  # type: ignore[arg-type]
    assert back.sent == 5
    assert now[0] - started > 1
    # Another send, right after a send gave up (a caller sending again), gets a wait of its own.
    with pytest.raises(transport.NoReplicasError):
        transport.ReliableFetch._put(stuck, "celery", {})  # type: ignore[arg-type]
    started = now[0]
    other = _Publisher(*[transport.NoReplicasError("NOREPLICAS") for _ in range(4)])
    transport.ReliableFetch._put(other, "celery", {"body": "another"})  # type: ignore[arg-type]
    assert other.sent == 5
    # A write taken ends the wait: a move right after it is waited for in full.
    moved = _Publisher(*[transport.NoReplicasError("NOREPLICAS") for _ in range(1000)])
    started = now[0]
    with pytest.raises(transport.NoReplicasError):
        transport.ReliableFetch._put(moved, "celery", {})  # type: ignore[arg-type]
    assert now[0] - started >= transport.MASTER_MOVING_SECONDS - 1


def test_a_sentinel_connection_keeps_this_transport_after_a_connection_error() -> None:
    # kombu's failover between the ";" URLs took the transport from the next URL's scheme at
    # the first connection error: kombu's own SentinelTransport from then on. And with three
    # URLs only every third reconnect paused as the retry policy says.
    from kombu import Connection

    urls = ";".join(f"sentinel://celery:pw@sentinel{i}:26379/0" for i in (1, 2, 3))
    conn = Connection(
        urls,
        transport="rcbundle.transport:SentinelTransport",
        transport_options={"master_name": "bundle"},
    )
    assert isinstance(conn.transport, transport.SentinelTransport)
    conn.maybe_switch_next()  # what kombu does at each connection error
    assert isinstance(conn.transport, transport.SentinelTransport)
    assert len(conn.alt) == 3  # every Sentinel, for the channels' pools
    assert all(conn.completes_cycle(retries) for retries in range(3))
