"""rcbundle.transport against a real redis-server: a fetch whose reply is lost loses no message,
and any producer's message wakes an idle consumer at once (keyspace notifications).

The cut is modelled exactly: the consumer's command reaches Redis, Redis answers, and the answer
is thrown away unread with the connection (what a network cut does to a waiting worker).
"""

import functools
import gc
import select
import socket
import time
import weakref
from collections.abc import Iterator
from queue import Empty

import pytest
import redis
from kombu import Consumer, Message

from rcbundle import transport
from testkit.loopback import NOTIFY_KEYSPACE_EVENTS, RedisServer
from tests.integration.kombu_client import (
    LONG_POLL,
    PREFIX,
    RELIABLE,
    STOCK,
    connect,
    cut_while_fetching,
    keep,
    publish,
    publish_later,
    queue,
    redis_url,
    subscribers,
    wait_for,
    wait_readable,
)

pytestmark = pytest.mark.integration

DB = 3
VISIBILITY = 1
# Well below LONG_POLL, and above a loaded CI machine's scheduling hiccups.
WOKEN_WITHIN = 3.0


@pytest.fixture
def admin(redis_server: RedisServer) -> Iterator[redis.Redis]:
    client = redis_server.client(redis_server.password, DB)
    client.flushdb()
    yield client
    client.config_set("maxmemory", 0)
    client.config_set("notify-keyspace-events", NOTIFY_KEYSPACE_EVENTS)
    client.flushdb()


def test_a_message_whose_fetch_reply_is_lost_is_recorded_and_restored(
    redis_server: RedisServer, admin: redis.Redis
) -> None:
    cut = queue("cut")
    url = redis_url(redis_server)
    with connect(url, RELIABLE, visibility_timeout=VISIBILITY) as conn:
        publish(conn, cut, "held")
        channel = cut_while_fetching(conn, cut, admin)
        assert admin.hlen(PREFIX + "unacked") == 1
        assert admin.zcard(PREFIX + "unacked_index") == 1
        time.sleep(VISIBILITY + 0.2)
        channel.qos.restore_visible(interval=1)
    assert admin.llen(PREFIX + cut.name) == 1
    assert admin.hlen(PREFIX + "unacked") == 0

    received: list[Message] = []
    with connect(url, RELIABLE, visibility_timeout=VISIBILITY) as conn:
        with Consumer(conn, queues=[cut], accept=["json"], callbacks=[keep(received)]):
            conn.drain_events(timeout=5)
        assert [m.payload for m in received] == ["held"]
        assert received[0].delivery_info["redelivered"] is True
        received[0].ack()
    assert admin.hlen(PREFIX + "unacked") == 0


def test_kombus_own_transport_loses_the_same_message(
    redis_server: RedisServer, admin: redis.Redis
) -> None:
    # The failure rcbundle.transport exists for. If a kombu release stops losing it, this
    # fails: then the stock transport may be enough again.
    cut = queue("cut-stock")
    with connect(redis_url(redis_server), STOCK, visibility_timeout=VISIBILITY) as conn:
        publish(conn, cut, "held")
        cut_while_fetching(conn, cut, admin)
    assert admin.llen(PREFIX + cut.name) == 0
    assert admin.hlen(PREFIX + "unacked") == 0


def test_producers_push_no_token_acks_clear_the_record_and_an_empty_fetch_clears_tokens(
    redis_server: RedisServer, admin: redis.Redis
) -> None:
    acked = queue("acked")
    received: list[Message] = []
    with connect(redis_url(redis_server), RELIABLE) as conn:
        channel = conn.default_channel
        assert isinstance(channel, transport.ReliableFetch)
        wake = PREFIX + channel.wake_key  # the channel's own, which only the channel pushes to
        for body in ("one", "two"):
            publish(conn, acked, body)
        assert admin.exists(wake) == 0  # our producers publish as kombu's do
        admin.lpush(wake, "stale", "stale")
        with Consumer(conn, queues=[acked], accept=["json"], callbacks=[keep(received)]):
            conn.drain_events(timeout=5)
            conn.drain_events(timeout=5)
            assert [m.payload for m in received] == ["one", "two"]
            assert admin.hlen(PREFIX + "unacked") == 2
            for message in received:
                message.ack()
            assert admin.hlen(PREFIX + "unacked") == 0
            with pytest.raises(TimeoutError):
                conn.drain_events(timeout=1.5)
    assert admin.exists(wake) == 0


def test_a_no_ack_consumer_leaves_no_record(redis_server: RedisServer, admin: redis.Redis) -> None:
    noack = queue("noack")
    received: list[Message] = []
    with connect(redis_url(redis_server), RELIABLE, rcbundle_owner="noack@itest") as conn:
        publish(conn, noack, "once")
        with Consumer(conn, queues=[noack], accept=["json"], no_ack=True,
                      callbacks=[keep(received)]):  # fmt: skip
            conn.drain_events(timeout=5)
    assert [m.payload for m in received] == ["once"]
    assert admin.hlen(PREFIX + "unacked") == 0
    assert admin.exists(PREFIX + "unacked_owner") == 0


def test_a_full_broker_refuses_publishing_but_still_hands_out_messages(
    redis_server: RedisServer, admin: redis.Redis
) -> None:
    # noeviction and over maxmemory: writes are refused, but the fetch must still record and take
    # (the script's allow-oom flag), or a full broker would stop its own draining.
    full = queue("full")
    received: list[Message] = []
    with connect(redis_url(redis_server), RELIABLE) as conn:
        publish(conn, full, "queued before")
        with Consumer(conn, queues=[full], accept=["json"], callbacks=[keep(received)]):
            admin.config_set("maxmemory", 1)
            with pytest.raises(redis.exceptions.OutOfMemoryError):
                admin.lpush(PREFIX + full.name, "refused")
            conn.drain_events(timeout=5)
            admin.config_set("maxmemory", 0)
        assert [m.payload for m in received] == ["queued before"]
        assert admin.hlen(PREFIX + "unacked") == 1
        received[0].ack()
    assert admin.hlen(PREFIX + "unacked") == 0


def test_a_stock_producers_message_wakes_an_idle_consumer_at_once(
    redis_server: RedisServer, admin: redis.Redis
) -> None:
    # The consumer's BRPOP times out only after LONG_POLL: only a notification explains a
    # delivery within seconds of the publish.
    woken = queue("woken")
    url = redis_url(redis_server)
    received: list[Message] = []
    with (
        connect(url, RELIABLE, polling_interval=LONG_POLL) as conn,
        Consumer(conn, queues=[woken], accept=["json"], callbacks=[keep(received)]),
    ):
        wait_for("the subscriber", lambda: subscribers(admin, woken.name) == 1)
        with pytest.raises(TimeoutError):
            conn.drain_events(timeout=0.5)  # idle: waiting on its wake list
        with publish_later(url, woken, "from stock kombu", delay=0.3) as published:
            conn.drain_events(timeout=LONG_POLL / 2)
            arrived = time.monotonic()
        assert [m.payload for m in received] == ["from stock kombu"]
        assert arrived - published[0] < WOKEN_WITHIN
        received[0].ack()
    assert admin.hlen(PREFIX + "unacked") == 0


def test_a_burst_to_an_idle_consumer_is_delivered_at_once_beyond_one_wake_up(
    redis_server: RedisServer, admin: redis.Redis
) -> None:
    # An event wakes the idle consumer, which fetches on a connection of its own while it finds
    # messages, up to ASIDE_MAX in a row; what is left ends its wait, and the poll fetches on.
    burst = queue("burst")
    count = 3 * transport.ASIDE_MAX + 5
    url = redis_url(redis_server)
    received: list[Message] = []
    with (
        connect(url, RELIABLE, polling_interval=LONG_POLL) as conn,
        Consumer(conn, queues=[burst], accept=["json"], callbacks=[keep(received)]),
    ):
        wait_for("the subscriber", lambda: subscribers(admin, burst.name) == 1)
        with pytest.raises(TimeoutError):
            conn.drain_events(timeout=0.5)  # idle: waiting on its wake list
        with connect(url, STOCK) as producer:
            started = time.monotonic()
            for i in range(count):
                publish(producer, burst, f"burst {i}")
        while len(received) < count:
            assert time.monotonic() - started < WOKEN_WITHIN, f"{len(received)} of {count}"
            conn.drain_events(timeout=LONG_POLL / 2)
        assert sorted(m.payload for m in received) == sorted(f"burst {i}" for i in range(count))
        for message in received:
            message.ack()
    assert admin.hlen(PREFIX + "unacked") == 0
    assert admin.llen(PREFIX + burst.name) == 0


def test_without_notifications_a_consumer_still_receives_within_its_polling_interval(
    redis_server: RedisServer, admin: redis.Redis
) -> None:
    admin.config_set("notify-keyspace-events", "")
    unannounced = queue("unannounced")
    url = redis_url(redis_server)
    received: list[Message] = []
    with (
        connect(url, RELIABLE, polling_interval=1) as conn,
        Consumer(conn, queues=[unannounced], accept=["json"], callbacks=[keep(received)]),
    ):
        with pytest.raises(TimeoutError):
            conn.drain_events(timeout=0.5)
        with publish_later(url, unannounced, "no notification", delay=0.3) as published:
            conn.drain_events(timeout=10)
            arrived = time.monotonic()
        assert [m.payload for m in received] == ["no notification"]
        assert arrived - published[0] < 1 + WOKEN_WITHIN
        received[0].ack()


def test_a_message_published_while_an_empty_fetch_is_on_the_wire_is_fetched_again_at_once(
    redis_server: RedisServer, admin: redis.Redis
) -> None:
    # The race: FETCH finds every queue empty; before the consumer has read that reply (and
    # would wait), a message is published and announced. The consumer must fetch again at once,
    # not wait out its polling interval.
    raced = queue("raced")
    url = redis_url(redis_server)
    received: list[Message] = []
    with connect(url, RELIABLE, polling_interval=LONG_POLL) as conn:
        channel = conn.default_channel
        assert isinstance(channel, transport.ReliableFetch)
        with Consumer(channel, queues=[raced], accept=["json"], callbacks=[keep(received)]):
            wait_for("the subscriber", lambda: subscribers(admin, raced.name) == 1)
            with pytest.raises(TimeoutError):
                conn.drain_events(timeout=0.5)  # the confirmation read; idle since
            assert not channel._woken
            # End that wait, then send the next FETCH and let it run, its reply unread.
            assert channel._poll_state == "wait"
            admin.lpush(PREFIX + channel.wake_key, "1")
            wait_readable(channel)
            with pytest.raises(Empty):
                channel._brpop_read()  # the token: the poll ends
            conn.transport.cycle.on_poll_start()  # type: ignore[attr-defined]  # sends FETCH
            assert channel._poll_state == "fetch"
            wait_readable(channel)  # FETCH ran: nothing to take
            with connect(url, STOCK) as producer:
                publish(producer, raced, "in between")
            subscription = channel._keyspace
            assert subscription is not None
            assert subscription.socket is not None
            wait_for("the notification", lambda: _readable(subscription.socket))
            with pytest.raises(Empty):
                channel.handlers[transport.KEYSPACE]()  # the event, read before the reply
            assert channel._woken
            started = time.monotonic()
            conn.drain_events(timeout=LONG_POLL / 2)  # the empty FETCH's reply, a FETCH again
            assert [m.payload for m in received] == ["in between"]
            assert time.monotonic() - started < WOKEN_WITHIN
            received[0].ack()


def _readable(sock: socket.socket | None) -> bool:
    return sock is not None and bool(select.select([sock], [], [], 0)[0])


def test_the_subscriber_follows_the_queues_consumed_and_ends_with_the_channel(
    redis_server: RedisServer, admin: redis.Redis
) -> None:
    first, second = queue("first"), queue("second")
    url = redis_url(redis_server)
    sep = transport.Channel.sep
    priority_keys = [f"{second.name}{sep}{pri}" for pri in (3, 6, 9)]
    received: list[Message] = []
    with connect(url, RELIABLE, polling_interval=LONG_POLL) as conn:
        channel = conn.default_channel
        assert isinstance(channel, transport.Channel)
        one = Consumer(channel, queues=[first], accept=["json"], callbacks=[keep(received)])
        one.consume()
        wait_for("first's subscriber", lambda: subscribers(admin, first.name) == 1)
        assert subscribers(admin, second.name) == 0
        two = Consumer(channel, queues=[second], accept=["json"], callbacks=[keep(received)])
        two.consume()
        # Every priority step's key of a queue, kombu's _q_for_pri.
        for key in [second.name, *priority_keys]:
            wait_for(f"a subscriber of {key!r}", functools.partial(_subscribed, admin, key))
        one.cancel()
        wait_for("first unsubscribed", lambda: subscribers(admin, first.name) == 0)

        with pytest.raises(TimeoutError):
            conn.drain_events(timeout=0.5)
        with publish_later(url, second, "to the queue added", delay=0.3) as published:
            conn.drain_events(timeout=LONG_POLL / 2)
            arrived = time.monotonic()
        assert [m.payload for m in received] == ["to the queue added"]
        assert arrived - published[0] < WOKEN_WITHIN
        received[0].ack()
        subscription = channel._keyspace
        assert subscription is not None
        assert subscription.pubsub is not None
    assert subscription.pubsub is None
    assert subscribers(admin, second.name) == 0


def test_a_consuming_channel_closes_after_its_transport_lost_its_connection(
    redis_server: RedisServer, admin: redis.Redis
) -> None:
    # Seen on a worker whose Sentinel-named master was killed: Celery closes the broker
    # connection after the error, kombu's close cancels the consumers once the pools are gone
    # and the transport has no connection left, and asking the pool for its database then
    # raised AttributeError, which ended the worker ("Unrecoverable error").
    url = redis_url(redis_server)
    with connect(url, RELIABLE, polling_interval=LONG_POLL) as conn:
        channel = conn.default_channel
        assert isinstance(channel, transport.Channel)
        Consumer(channel, queues=[queue("lost")], accept=["json"], callbacks=[]).consume()
        wait_for("the subscriber", lambda: subscribers(admin, "lost") == 1)
        transport_ = channel.connection
        transport_.client = None  # as kombu's Connection._do_close_transport leaves it
        channel._disconnect_pools()  # type: ignore[attr-defined]  # kombu, untyped
        channel.close()
        assert channel.closed
    wait_for("the subscriber gone", lambda: subscribers(admin, "lost") == 0)


def test_the_subscriber_reconnects_and_wakes_for_what_came_while_it_was_away(
    redis_server: RedisServer, admin: redis.Redis
) -> None:
    again, scratch = queue("again"), queue("again-scratch")
    url = redis_url(redis_server)
    received: list[Message] = []
    with (
        connect(url, RELIABLE, polling_interval=LONG_POLL) as conn,
        Consumer(conn, queues=[again], accept=["json"], callbacks=[keep(received)]),
    ):
        wait_for("the subscriber", lambda: subscribers(admin, again.name) == 1)
        with connect(url, STOCK) as producer:
            publish(producer, scratch, "while away")  # a queue nobody consumes
        with pytest.raises(TimeoutError):
            conn.drain_events(timeout=0.5)  # idle: waiting on its wake list
        try:
            # Its connection dropped, and new ones refused for now (the connections already
            # made stay authenticated): the subscriber is away and retrying.
            admin.config_set("requirepass", redis_server.password + "-changed")
            assert admin.client_kill_filter(_type="pubsub") >= 1
            with pytest.raises(TimeoutError):
                conn.drain_events(timeout=0.5)  # the subscriber sees its connection go
            # The message arrives unannounced: nobody is subscribed.
            admin.lmove(PREFIX + scratch.name, PREFIX + again.name, "RIGHT", "LEFT")
            time.sleep(0.5)
            assert admin.llen(PREFIX + again.name) == 1
            assert subscribers(admin, again.name) == 0
        finally:
            admin.config_set("requirepass", redis_server.password)
        # Back (after its backoff), the subscription it confirms wakes the consumer, which
        # fetches: nothing else has happened since the message came (nobody polled).
        back = time.monotonic()
        conn.drain_events(timeout=LONG_POLL / 2)
        assert [m.payload for m in received] == ["while away"]
        assert time.monotonic() - back < WOKEN_WITHIN
        assert subscribers(admin, again.name) == 1
        received[0].ack()
        with publish_later(url, again, "after", delay=0.3) as published:
            conn.drain_events(timeout=LONG_POLL / 2)
            arrived = time.monotonic()
        assert [m.payload for m in received][1:] == ["after"]
        assert arrived - published[0] < WOKEN_WITHIN
        received[1].ack()


def _subscribed(admin: redis.Redis, key: str) -> bool:
    return subscribers(admin, key) == 1


def test_the_subscriber_ends_when_nothing_is_consumed_and_when_its_channel_is_dropped(
    redis_server: RedisServer, admin: redis.Redis
) -> None:
    # Celery's app.close() drops its connection pool without closing the channels in it (a
    # producer's reply consumers of `celery inspect`, say).
    replies = queue("replies")
    conn = connect(redis_url(redis_server), RELIABLE)
    channel = conn.default_channel
    assert isinstance(channel, transport.Channel)
    consumer = Consumer(channel, queues=[replies], accept=["json"], no_ack=True)
    consumer.consume()
    assert channel._keyspace is not None
    wait_for("the subscriber", lambda: subscribers(admin, replies.name) == 1)
    consumer.cancel()
    assert channel._keyspace.pubsub is None  # no connection is kept for nothing
    wait_for("the subscriber retired", lambda: subscribers(admin, replies.name) == 0)
    consumer.consume()
    assert channel._keyspace.pubsub is not None
    wait_for("the subscriber again", lambda: subscribers(admin, replies.name) == 1)
    dropped = weakref.ref(channel)
    del channel, consumer, conn
    gc.collect()
    assert dropped() is None  # nothing of the subscription's keeps its channel alive
    wait_for(
        "the dropped channel's subscriber ended", lambda: subscribers(admin, replies.name) == 0
    )


@pytest.mark.parametrize("granted", [True, False], ids=["channels-granted", "channels-refused"])
def test_an_acl_user_needs_the_keyspace_channels_to_be_woken_and_works_without_them(
    redis_server: RedisServer, admin: redis.Redis, granted: bool, caplog: pytest.LogCaptureFixture
) -> None:
    user, password = f"acl-{granted}".lower(), "acl-password"
    admin.acl_setuser(
        user, enabled=True, passwords=[f"+{password}"], keys=[f"{PREFIX}*"], commands=["+@all"],
        channels=[f"__keyspace@{DB}__:{PREFIX}*"] if granted else [], reset_channels=True,
    )  # fmt: skip
    url = f"redis://{user}:{password}@127.0.0.1:{redis_server.port}/{DB}"
    polls = LONG_POLL if granted else 1.0
    try:
        acl = queue(f"acl-{granted}")
        received: list[Message] = []
        with (
            connect(url, RELIABLE, polling_interval=polls) as conn,
            Consumer(conn, queues=[acl], accept=["json"], callbacks=[keep(received)]),
        ):
            with pytest.raises(TimeoutError):
                conn.drain_events(timeout=0.5)
            with publish_later(redis_url(redis_server), acl, "to an ACL user", 0.3) as published:
                conn.drain_events(timeout=10)
                arrived = time.monotonic()
            assert [m.payload for m in received] == ["to an ACL user"]
            if granted:
                assert arrived - published[0] < WOKEN_WITHIN
            else:
                assert arrived - published[0] < polls + WOKEN_WITHIN
                assert "keyspace subscriber lost its connection (NoPermissionError" in caplog.text
            received[0].ack()
    finally:
        admin.acl_deluser(user)
