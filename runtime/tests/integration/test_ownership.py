"""rcbundle.transport's owner records (transport option rcbundle_owner) against a real server.

A restart is a new process: in this one, rcbundle.transport's set of owners already restored is
emptied to stand for it (what a new process starts with). test_owner_worker.py restarts real
worker processes.
"""

import contextlib
import json
import os
import time
import uuid
from collections.abc import Iterator

import pytest
import redis
from kombu import Consumer, Message, Queue
from kombu.transport import redis as kombu_redis

from rcbundle import transport
from testkit.loopback import RedisServer
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
)

pytestmark = pytest.mark.integration

DB = 3
OWNERS = PREFIX + "unacked_owner"
UNACKED = PREFIX + "unacked"


@pytest.fixture
def admin(redis_server: RedisServer) -> Iterator[redis.Redis]:
    client = redis_server.client(redis_server.password, DB)
    client.flushdb()
    yield client
    client.flushdb()


def _owner() -> str:
    return f"node-{uuid.uuid4().hex[:8]}@itest"


def _new_process() -> None:
    transport._restored_owners.clear()


def test_a_fetch_records_its_owner_and_ack_reject_and_restore_remove_it(
    redis_server: RedisServer, admin: redis.Redis
) -> None:
    owned = queue("owned")
    owner = _owner()
    received: list[Message] = []
    with connect(redis_url(redis_server), RELIABLE, rcbundle_owner=owner) as conn:
        for body in ("acked", "rejected", "requeued", "left"):
            publish(conn, owned, body)
        with Consumer(conn, queues=[owned], accept=["json"], callbacks=[keep(received)]):
            for _ in range(4):
                conn.drain_events(timeout=5)
        tags = {m.payload: m.delivery_tag for m in received}
        assert admin.hgetall(OWNERS) == {tag: owner for tag in tags.values()}
        assert admin.hlen(UNACKED) == 4
        acked, rejected, requeued, _left = received
        acked.ack()
        rejected.reject()
        requeued.reject(requeue=True)
        assert admin.hgetall(OWNERS) == {tags["left"]: owner}
        assert admin.llen(PREFIX + owned.name) == 1  # requeued
    # Closing the connection restores what it held unacknowledged (kombu's restore at close).
    assert admin.hlen(UNACKED) == 0
    assert admin.exists(OWNERS) == 0
    assert admin.llen(PREFIX + owned.name) == 2


def test_without_an_owner_nothing_is_recorded_and_a_fetch_drops_a_stale_owner_entry(
    redis_server: RedisServer, admin: redis.Redis
) -> None:
    plain = queue("plain")
    received: list[Message] = []
    with connect(redis_url(redis_server), RELIABLE) as conn:
        publish(conn, plain, "unowned")
        raw = admin.lindex(PREFIX + plain.name, -1)
        assert raw is not None
        message_tag = json.loads(raw)["properties"]["delivery_tag"]
        # What a stock kombu restore leaves: an owner entry for a message back in its queue.
        admin.hset(OWNERS, message_tag, "gone@itest")
        with Consumer(conn, queues=[plain], accept=["json"], callbacks=[keep(received)]):
            conn.drain_events(timeout=5)
            assert admin.hlen(UNACKED) == 1
            assert admin.exists(OWNERS) == 0
            received[0].ack()


def test_a_restarted_owner_takes_back_what_it_held_and_drops_stale_entries(
    redis_server: RedisServer, admin: redis.Redis
) -> None:
    held, others = queue("held"), queue("held-other")
    owner, other = _owner(), _owner()
    url = redis_url(redis_server)
    # Long visibility timeout: only the owner's restart explains a prompt redelivery.
    options = {"visibility_timeout": 3600, "polling_interval": LONG_POLL}
    taken: list[Message] = []
    with connect(url, RELIABLE, rcbundle_owner=owner, **options) as conn:
        publish(conn, held, "held when killed")
        with Consumer(conn, queues=[held], accept=["json"], callbacks=[keep(taken)]):
            conn.drain_events(timeout=5)
        channel = conn.default_channel
        assert isinstance(channel, transport.ReliableFetch)
        channel.qos.restore_at_shutdown = False  # killed: nothing restored
    kept: list[Message] = []
    other_conn = connect(url, RELIABLE, rcbundle_owner=other, **options)
    publish(other_conn, others, "another node's")
    other_consumer = Consumer(other_conn, queues=[others], accept=["json"],
                              callbacks=[keep(kept)])  # fmt: skip
    other_consumer.consume()
    other_conn.drain_events(timeout=5)
    try:
        assert admin.hlen(UNACKED) == 2
        admin.hset(OWNERS, mapping={"ghost-1": owner, "ghost-2": other})  # no unacked entry
        _new_process()
        received: list[Message] = []
        with connect(url, RELIABLE, rcbundle_owner=owner, **options) as conn:
            with Consumer(conn, queues=[held], accept=["json"], callbacks=[keep(received)]):
                conn.drain_events(timeout=5)
            assert [m.payload for m in received] == ["held when killed"]
            assert received[0].delivery_info["redelivered"] is True
            assert received[0].delivery_tag == taken[0].delivery_tag
            # The other node's message stays where it is, and so does its owner entry.
            assert admin.hgetall(OWNERS) == {
                received[0].delivery_tag: owner,
                kept[0].delivery_tag: other,
            }
            received[0].ack()
        assert admin.hgetall(OWNERS) == {kept[0].delivery_tag: other}
        assert admin.llen(PREFIX + others.name) == 0
        kept[0].ack()
    finally:
        other_conn.release()
    assert admin.exists(OWNERS) == 0
    assert admin.hlen(UNACKED) == 0


def test_an_owner_restores_once_per_process_not_what_its_running_tasks_hold(
    redis_server: RedisServer, admin: redis.Redis
) -> None:
    # A reconnect makes a new channel while the tasks fetched by the old one still run.
    running = queue("running")
    owner = _owner()
    url = redis_url(redis_server)
    held: list[Message] = []
    with connect(url, RELIABLE, rcbundle_owner=owner) as first:
        publish(first, running, "still running")
        with Consumer(first, queues=[running], accept=["json"], callbacks=[keep(held)]):
            first.drain_events(timeout=5)
            with (
                connect(url, RELIABLE, rcbundle_owner=owner) as second,
                Consumer(second, queues=[running], accept=["json"]),
            ):
                assert admin.llen(PREFIX + running.name) == 0
                assert admin.hgetall(OWNERS) == {held[0].delivery_tag: owner}
            held[0].ack()
    assert admin.exists(OWNERS) == 0


def test_a_forked_child_inherits_no_subscriber_restores_nothing_and_breaks_nothing(
    redis_server: RedisServer, admin: redis.Redis
) -> None:
    # What prefork does: a pool process forked while the consumer (and its subscriber) runs.
    parents, childs = queue("parent"), queue("child")
    owner = _owner()
    url = redis_url(redis_server)
    received: list[Message] = []
    with connect(url, RELIABLE, rcbundle_owner=owner, polling_interval=LONG_POLL) as conn:
        channel = conn.default_channel
        assert isinstance(channel, transport.ReliableFetch)
        publish(conn, parents, "held by the parent")
        with Consumer(channel, queues=[parents], accept=["json"], callbacks=[keep(received)]):
            conn.drain_events(timeout=5)
            wait_for("the parent's subscriber", lambda: subscribers(admin, parents.name) == 1)
            _new_process()  # the child would restore, were it not a forked child
            pid = os.fork()
            if pid == 0:  # pragma: no cover - the child reports through its exit status
                os._exit(_child(url, channel, childs, owner))
            _, status = os.waitpid(pid, 0)
            assert os.waitstatus_to_exitcode(status) == 0, _CHILD_FAILURES.get(
                os.waitstatus_to_exitcode(status), "the child failed"
            )
            # Nothing restored by the child; the parent's subscriber and connections still work.
            assert admin.hgetall(OWNERS) == {received[0].delivery_tag: owner}
            assert subscribers(admin, parents.name) == 1
            received[0].ack()
            with pytest.raises(TimeoutError):
                conn.drain_events(timeout=0.5)
            with publish_later(url, parents, "after the fork", delay=0.3) as published:
                conn.drain_events(timeout=LONG_POLL / 2)
                arrived = time.monotonic()
            assert [m.payload for m in received][1:] == ["after the fork"]
            assert arrived - published[0] < 3
            received[1].ack()


_CHILD_FAILURES = {
    3: "the child inherited its parent's subscription",
    4: "the child restored its parent's messages",
    5: "the child's own consumer was not woken",
    6: "the child raised",
}


def _child(url: str, inherited: transport.ReliableFetch, to: Queue, owner: str) -> int:
    try:
        subscription = inherited._keyspace
        if subscription is None or subscription.pubsub is not None:
            return 3
        got: list[Message] = []
        with (
            connect(url, RELIABLE, rcbundle_owner=owner, polling_interval=LONG_POLL) as conn,
            Consumer(conn, queues=[to], accept=["json"], callbacks=[keep(got)]),
        ):
            if redis.Redis.from_url(url).llen(PREFIX + "parent"):
                return 4
            with contextlib.suppress(TimeoutError):
                conn.drain_events(timeout=0.5)
            with connect(url, STOCK) as producer:
                publish(producer, to, "to the child")
            started = time.monotonic()
            conn.drain_events(timeout=LONG_POLL / 2)
            if [m.payload for m in got] != ["to the child"] or time.monotonic() - started > 3:
                return 5
            got[0].ack()
        return 0
    except BaseException:
        return 6


def test_a_fetch_reply_lost_with_a_connection_comes_back_at_the_reconnect(
    redis_server: RedisServer, admin: redis.Redis
) -> None:
    # A worker cut off while it waited: Redis ran its fetch, the reply went with the connection.
    # Its next connection (same process, same owner) takes the message back at once, while the
    # one it received and still runs stays with it. The visibility timeout would take an hour.
    lost, running = queue("lost-reply"), queue("still-running")
    owner = _owner()
    url = redis_url(redis_server)
    options = {"visibility_timeout": 3600, "polling_interval": LONG_POLL}
    held: list[Message] = []
    with connect(url, RELIABLE, rcbundle_owner=owner, **options) as first:
        publish(first, running, "running")
        with Consumer(first, queues=[running], accept=["json"], callbacks=[keep(held)]):
            first.drain_events(timeout=5)
        publish(first, lost, "reply lost")
        cut_while_fetching(first, lost, admin)
        assert admin.hlen(UNACKED) == 2
        received: list[Message] = []
        with connect(url, RELIABLE, rcbundle_owner=owner, **options) as second:
            with Consumer(second, queues=[lost, running], accept=["json"],
                          callbacks=[keep(received)]):  # fmt: skip
                second.drain_events(timeout=5)
            assert [m.payload for m in received] == ["reply lost"]
            assert received[0].delivery_info["redelivered"] is True
            assert admin.llen(PREFIX + running.name) == 0
            received[0].ack()
        held[0].ack()
    assert admin.hlen(UNACKED) == 0
    assert admin.exists(OWNERS) == 0


def test_nothing_is_taken_back_while_a_fetch_reply_can_still_arrive(
    redis_server: RedisServer, admin: redis.Redis
) -> None:
    pending = queue("reply-pending")
    owner = _owner()
    url = redis_url(redis_server)
    options = {"visibility_timeout": 3600, "polling_interval": LONG_POLL}
    with connect(url, RELIABLE, rcbundle_owner=owner, **options) as first:
        publish(first, pending, "on the wire")
        channel = first.default_channel
        Consumer(channel, queues=[pending], accept=["json"]).consume()
        first.transport.cycle.on_poll_start()  # type: ignore[attr-defined]  # sends the fetch
        wait_for("the fetch ran", lambda: not admin.llen(PREFIX + pending.name))
        # A second channel of the owner starts while the first's reply is unread but can arrive.
        with (
            connect(url, RELIABLE, rcbundle_owner=owner, **options) as second,
            Consumer(second, queues=[pending], accept=["json"]),
        ):
            assert admin.llen(PREFIX + pending.name) == 0
            assert admin.hlen(UNACKED) == 1
        received: list[Message] = []
        Consumer(channel, queues=[pending], accept=["json"], callbacks=[keep(received)]).consume()
        first.drain_events(timeout=5)
        assert [m.payload for m in received] == ["on the wire"]
        received[0].ack()
    assert admin.hlen(UNACKED) == 0


def test_a_message_let_go_unsettled_is_swept_back_what_runs_stays(
    redis_server: RedisServer, admin: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Celery rejects a task whose result it could not store, the reject fails on a connection
    # lost in a network cut, and Celery drops the message: without the sweep it would wait for
    # the visibility timeout (an hour by default), owned by a live node that never restarts.
    monkeypatch.setattr(transport, "UNHELD_AFTER", 0.5)
    dropped, running = queue("dropped"), queue("sweep-running")
    owner = _owner()
    url = redis_url(redis_server)
    options = {"visibility_timeout": 3600, "polling_interval": LONG_POLL}
    taken: list[Message] = []
    with connect(url, RELIABLE, rcbundle_owner=owner, **options) as conn:
        publish(conn, dropped, "reject failed")
        publish(conn, running, "still running")
        with Consumer(conn, queues=[dropped, running], accept=["json"], callbacks=[keep(taken)]):
            conn.drain_events(timeout=5)
            conn.drain_events(timeout=5)
            assert sorted(m.payload for m in taken) == ["reject failed", "still running"]
            failed = next(m for m in taken if m.payload == "reject failed")
            channel = conn.default_channel
            assert isinstance(channel, transport.ReliableFetch)

            def lost(*args: object, **kwargs: object) -> None:
                raise redis.ConnectionError("connection lost in the cut")

            with monkeypatch.context() as cut:
                cut.setattr(kombu_redis.QoS, "restore_by_tag", lost)
                with pytest.raises(redis.ConnectionError):
                    failed.reject(requeue=True)
            assert admin.llen(PREFIX + dropped.name) == 0
            time.sleep(0.6)
            channel.qos.restore_visible()
            # Back on its queue, marked redelivered; the running one stays where it is.
            assert admin.llen(PREFIX + dropped.name) == 1
            assert admin.llen(PREFIX + running.name) == 0
            assert list(admin.hgetall(OWNERS).values()) == [owner]
            next(m for m in taken if m.payload == "still running").ack()
    assert admin.hlen(UNACKED) == 0


def test_the_sweep_waits_while_a_fetch_reply_can_still_arrive(
    redis_server: RedisServer, admin: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(transport, "UNHELD_AFTER", 0.0)
    pending = queue("sweep-pending")
    owner = _owner()
    url = redis_url(redis_server)
    options = {"visibility_timeout": 3600, "polling_interval": LONG_POLL}
    with connect(url, RELIABLE, rcbundle_owner=owner, **options) as conn:
        channel = conn.default_channel
        assert isinstance(channel, transport.ReliableFetch)
        Consumer(channel, queues=[pending], accept=["json"]).consume()
        publish(conn, pending, "on the wire")
        conn.transport.cycle.on_poll_start()  # type: ignore[attr-defined]  # sends the fetch
        wait_for("the fetch ran", lambda: not admin.llen(PREFIX + pending.name))
        channel.qos.restore_visible()
        assert admin.llen(PREFIX + pending.name) == 0  # its reply is still to be read
        received: list[Message] = []
        Consumer(channel, queues=[pending], accept=["json"], callbacks=[keep(received)]).consume()
        conn.drain_events(timeout=5)
        assert [m.payload for m in received] == ["on the wire"]
        received[0].ack()
    assert admin.hlen(UNACKED) == 0
