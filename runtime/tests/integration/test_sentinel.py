"""rcbundle.transport:SentinelTransport against a real redis-server and Sentinel on loopback:
the same fetch, wake-ups and ownership as the plain transport, and a subscriber that follows
the master when Sentinel fails over."""

import base64
import contextlib
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, cast
from urllib.parse import quote

import pytest
import redis
import redis.sentinel
from kombu import Connection, Consumer, Message, Producer
from kombu.exceptions import OperationalError
from kombu.transport.redis import SentinelTransport as KombuSentinelTransport

from rcbundle import transport
from rcbundle.config import SENTINEL_PUBLISH_RETRY_POLICY
from testkit.loopback import RedisServer, run_redis, run_sentinel
from tests.integration.kombu_client import (
    LONG_POLL,
    PREFIX,
    connect,
    cut_while_fetching,
    keep,
    publish,
    publish_later,
    queue,
    subscribers,
    wait_for,
)

pytestmark = pytest.mark.integration

MASTER = "rcbundle-itest"
DB = 4
RELIABLE_SENTINEL = "rcbundle.transport:SentinelTransport"
STOCK_SENTINEL = "kombu.transport.redis:SentinelTransport"
WOKEN_WITHIN = 3.0
FAILOVER_SECONDS = 60
# Celery's task_publish_retry_policy when the app sets none (celery.app.defaults).
CELERY_DEFAULT_PUBLISH_RETRY_POLICY = {
    "max_retries": 3,
    "interval_start": 0,
    "interval_max": 1,
    "interval_step": 0.2,
}


@dataclass(frozen=True)
class Sentinelled:
    master: RedisServer
    sentinel_port: int

    @property
    def url(self) -> str:
        password = quote(self.master.password, safe="")
        return f"sentinel://:{password}@127.0.0.1:{self.sentinel_port}/{DB}"

    def admin(self, server: RedisServer | None = None) -> redis.Redis:
        server = server or self.master
        return server.client(server.password, DB)


class Group(NamedTuple):
    first: RedisServer  # the master at the start
    second: RedisServer  # its replica, in sync
    setup: Sentinelled
    sentinel: redis.Redis  # a client of the Sentinel


@contextlib.contextmanager
def replicated(tmp_path: Path) -> Iterator[Group]:
    """A master, its replica in sync, and a Sentinel (quorum 1) that sees both."""
    with (
        run_redis(tmp_path) as first,
        run_redis(tmp_path, replica_of=first) as second,
    ):
        wait_for("the replica in sync", lambda: _in_sync(second), FAILOVER_SECONDS)
        with run_sentinel(tmp_path, first, MASTER) as port:
            sentinel = redis.Redis(host="127.0.0.1", port=port, decode_responses=True)
            try:
                wait_for("Sentinel sees the replica", lambda: _replicas(sentinel), FAILOVER_SECONDS)
                yield Group(first, second, Sentinelled(first, port), sentinel)
            finally:
                sentinel.close()


def _connect(setup: Sentinelled, transport_name: str, **options: object) -> Connection:
    return connect(setup.url, transport_name, master_name=MASTER, **options)


@pytest.fixture(scope="module")
def sentinelled(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sentinelled]:
    workdir = tmp_path_factory.mktemp("sentinel")
    with run_redis(workdir) as master, run_sentinel(workdir, master, MASTER) as port:
        yield Sentinelled(master, port)


@pytest.fixture
def admin(sentinelled: Sentinelled) -> Iterator[redis.Redis]:
    client = sentinelled.admin()
    client.flushdb()
    yield client
    client.flushdb()


def test_the_sentinel_channel_joins_kombus_options_and_ours() -> None:
    options = transport.SentinelChannel.from_transport_options
    for name in ("master_name", "sentinel_kwargs", "min_other_sentinels", "global_keyprefix"):
        assert name in options
    assert "rcbundle_owner" in options
    assert "rcbundle_owner" in transport.Channel.from_transport_options
    assert issubclass(transport.SentinelTransport, KombuSentinelTransport)


def test_a_round_trip_over_sentinel_is_fetched_with_its_record_and_owner(
    sentinelled: Sentinelled, admin: redis.Redis
) -> None:
    trip = queue("trip")
    received: list[Message] = []
    with _connect(sentinelled, RELIABLE_SENTINEL, rcbundle_owner="s1@itest") as conn:
        assert isinstance(conn.default_channel, transport.SentinelChannel)
        publish(conn, trip, "there and back")
        with Consumer(conn, queues=[trip], accept=["json"], callbacks=[keep(received)]):
            conn.drain_events(timeout=5)
        assert [m.payload for m in received] == ["there and back"]
        assert admin.hlen(PREFIX + "unacked") == 1
        assert admin.hgetall(PREFIX + "unacked_owner") == {received[0].delivery_tag: "s1@itest"}
        received[0].ack()
    assert admin.hlen(PREFIX + "unacked") == 0
    assert admin.exists(PREFIX + "unacked_owner") == 0


def test_a_stock_producers_message_wakes_an_idle_consumer_over_sentinel(
    sentinelled: Sentinelled, admin: redis.Redis
) -> None:
    woken = queue("woken-sentinel")
    received: list[Message] = []
    with (
        _connect(sentinelled, RELIABLE_SENTINEL, polling_interval=LONG_POLL) as conn,
        Consumer(conn, queues=[woken], accept=["json"], callbacks=[keep(received)]),
    ):
        wait_for("the subscriber", lambda: subscribers(admin, woken.name, DB) == 1)
        with pytest.raises(TimeoutError):
            conn.drain_events(timeout=0.5)
        with publish_later(
            sentinelled.url, woken, "from stock kombu", 0.3, STOCK_SENTINEL, master_name=MASTER
        ) as published:
            conn.drain_events(timeout=LONG_POLL / 2)
            arrived = time.monotonic()
        assert [m.payload for m in received] == ["from stock kombu"]
        assert arrived - published[0] < WOKEN_WITHIN
        received[0].ack()


def test_a_message_whose_fetch_reply_is_lost_over_sentinel_is_recorded_and_restored(
    sentinelled: Sentinelled, admin: redis.Redis
) -> None:
    cut = queue("cut-sentinel")
    with _connect(sentinelled, RELIABLE_SENTINEL, visibility_timeout=1) as conn:
        publish(conn, cut, "held")
        channel = cut_while_fetching(conn, cut, admin)
        assert admin.hlen(PREFIX + "unacked") == 1
        time.sleep(1.2)
        channel.qos.restore_visible(interval=1)
    assert admin.llen(PREFIX + cut.name) == 1

    received: list[Message] = []
    with _connect(sentinelled, RELIABLE_SENTINEL) as conn:
        with Consumer(conn, queues=[cut], accept=["json"], callbacks=[keep(received)]):
            conn.drain_events(timeout=5)
        assert [m.payload for m in received] == ["held"]
        assert received[0].delivery_info["redelivered"] is True
        received[0].ack()
    assert admin.hlen(PREFIX + "unacked") == 0


def test_the_subscriber_follows_the_master_when_sentinel_fails_over(tmp_path: Path) -> None:
    followed = queue("followed")
    with replicated(tmp_path) as (first, second, setup, sentinel):
        old, new = setup.admin(first), setup.admin(second)
        received: list[Message] = []
        options = {"polling_interval": LONG_POLL, "health_check_interval": 1}
        with (
            _connect(setup, RELIABLE_SENTINEL, **options) as conn,
            Consumer(conn, queues=[followed], accept=["json"], callbacks=[keep(received)]),
        ):
            channel = conn.default_channel
            assert isinstance(channel, transport.SentinelChannel)
            wait_for("subscribed on the master", lambda: subscribers(old, followed.name, DB) == 1)
            with pytest.raises(TimeoutError):
                conn.drain_events(timeout=0.5)

            sentinel.sentinel_failover(MASTER)
            wait_for(
                "the failover",
                lambda: _master_port(sentinel) == second.port,
                FAILOVER_SECONDS,
            )
            # kombu's own recovery of the consumer's poll connection (the old master ends
            # its BRPOP, then refuses the fetch's writes): it reconnects through Sentinel.
            # The subscription, checked on the poll's health check interval, moves too.
            _drain_until_idle_on(conn, channel, second.port)
            wait_for(
                "the subscriber on the new master",
                lambda: _polled(conn) and subscribers(new, followed.name, DB) == 1,
                10,
            )
            assert subscribers(old, followed.name, DB) == 0
            with publish_later(
                setup.url, followed, "after", 0.3, STOCK_SENTINEL, master_name=MASTER
            ) as published:
                conn.drain_events(timeout=LONG_POLL / 2)
                arrived = time.monotonic()
            assert [m.payload for m in received] == ["after"]
            assert arrived - published[0] < WOKEN_WITHIN
            received[0].ack()


def test_every_sentinel_pool_of_the_process_follows_when_one_learns_of_a_move(
    tmp_path: Path,
) -> None:
    # As in a worker: kombu's pools and Celery's result backend each have their own idea of the
    # master. The one that asks Sentinel (the keyspace subscriber's check, a new connection)
    # learns of the move; the others drop their idle connections to the old master at once
    # instead of each waiting out a socket timeout on it when the old master is frozen.
    with replicated(tmp_path) as (first, second, setup, sentinel):
        learner, follower, other = (
            cast(Any, redis.sentinel.Sentinel)([("127.0.0.1", setup.sentinel_port)]).master_for(
                name, password=first.password, db=DB
            )
            for name in (MASTER, MASTER, "another-master")
        )
        assert learner.ping()
        assert follower.ping()
        idle = follower.connection_pool._available_connections[0]
        assert (idle.port, idle._sock is not None) == (first.port, True)
        other_proxy = other.connection_pool.proxy
        other_proxy.master_address = ("127.0.0.1", first.port)  # another group, same address

        wait_for("a failover Sentinel accepts", lambda: _failover(sentinel), FAILOVER_SECONDS)
        wait_for("the failover", lambda: _master_port(sentinel) == second.port, FAILOVER_SECONDS)
        # As the keyspace subscriber's check asks (SENTINEL MASTERS names the new master
        # only once the failover is complete).
        learned = learner.connection_pool.get_master_address
        wait_for("the move learnt", lambda: learned()[1] == second.port, FAILOVER_SECONDS)

        assert idle._sock is None  # dropped without being used
        assert follower.connection_pool.master_address[1] == second.port
        assert follower.set("followed", "yes")  # a write: the new master
        assert other_proxy.master_address == ("127.0.0.1", first.port)  # not its group
        for client in (learner, follower, other):
            client.close()


def test_a_send_waits_for_sentinel_to_replace_a_killed_master(tmp_path: Path) -> None:
    # The master's server gone (its connections refused, then Sentinel reporting it down until
    # it promotes the replica): with Celery's default publish retry policy kombu's reconnects
    # give up within a second and the send fails; with the bundle's, it waits for the new
    # master and lands there.
    to = queue("waited")
    with replicated(tmp_path) as (first, second, setup, sentinel):
        with _connect(setup, RELIABLE_SENTINEL) as conn:
            producer = Producer(conn)

            def send(body: str, policy: dict[str, Any]) -> None:
                producer.publish(
                    body,
                    exchange=to.exchange,
                    routing_key=to.routing_key,
                    declare=[to],
                    serializer="json",
                    retry=True,
                    retry_policy=policy,
                )

            send("before", CELERY_DEFAULT_PUBLISH_RETRY_POLICY)
            with contextlib.suppress(redis.ConnectionError):
                setup.admin(first).shutdown(nosave=True)  # answers by closing
            with pytest.raises(OperationalError):
                send("refused", CELERY_DEFAULT_PUBLISH_RETRY_POLICY)
            started = time.monotonic()
            send("waited", SENTINEL_PUBLISH_RETRY_POLICY)
            waited = time.monotonic() - started
        assert _master_port(sentinel) == second.port
        queued = setup.admin(second).lrange(f"{PREFIX}{to.name}", 0, -1)
        bodies = [json.loads(base64.b64decode(json.loads(m)["body"])) for m in queued]
        assert bodies == ["waited", "before"]  # kombu's envelope: the body in base64
        assert waited > 1  # it did wait for the promotion


def _failover(sentinel: redis.Redis) -> bool:
    """SENTINEL FAILOVER, refused (NOGOODSLAVE) until Sentinel has checked the replica."""
    try:
        return bool(sentinel.sentinel_failover(MASTER))
    except redis.ResponseError:
        return False


def _in_sync(replica: RedisServer) -> bool:
    info = replica.client(replica.password).info("replication")
    return bool(info.get("master_link_status") == "up")


def _replicas(sentinel: redis.Redis) -> bool:
    try:
        return bool(sentinel.sentinel_slaves(MASTER))
    except redis.RedisError:
        return False


def _master_port(sentinel: redis.Redis) -> int:
    address: Any = sentinel.sentinel_get_master_addr_by_name(MASTER)
    return int(address[1]) if address else 0


def _polled(conn: Connection) -> bool:
    """One short poll (the subscription's health check and master check run in it)."""
    with contextlib.suppress(TimeoutError, redis.ConnectionError, redis.ResponseError):
        conn.drain_events(timeout=0.2)
    return True


def _drain_until_idle_on(conn: Connection, channel: transport.SentinelChannel, port: int) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            conn.drain_events(timeout=0.5)
        except TimeoutError:
            if channel.client.connection.port == port:
                return
        except (redis.ConnectionError, redis.ResponseError):
            continue
    pytest.fail("the consumer did not reconnect to the new master")
