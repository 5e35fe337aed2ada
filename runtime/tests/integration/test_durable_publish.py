"""rcbundle_publish_replicas against a real master and replica on loopback: a publish returns
once a replica holds the message, and fails, instead of being accepted, when no replica takes
it in time."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from typing import cast

import pytest
import redis
from kombu import Connection

from rcbundle import transport
from testkit.loopback import PASSWORD, RedisServer, run_redis

from .kombu_client import DB, PREFIX, RELIABLE, connect, publish, queue, redis_url, wait_for


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RedisServer, RedisServer]]:
    workdir = tmp_path_factory.mktemp("durable")
    with run_redis(workdir) as master, run_redis(workdir, replica_of=master) as replica:
        wait_for("the replica in sync", lambda: _in_sync(replica), 20)
        yield master, replica


def _in_sync(replica: RedisServer) -> bool:
    return replica.client(PASSWORD).info("replication").get("master_link_status") == "up"


def _durable(master: RedisServer) -> Connection:
    return connect(redis_url(master), RELIABLE, rcbundle_publish_replicas=1)


def test_a_publish_returns_once_the_replica_holds_the_message(
    pair: tuple[RedisServer, RedisServer],
) -> None:
    master, replica = pair
    kept = queue("kept")
    with _durable(master) as conn:
        publish(conn, kept, "replicated")
    # Already there: the publish waited for it.
    assert replica.client(PASSWORD, db=DB).llen(PREFIX + kept.name) == 1


def test_a_publish_no_replica_takes_fails_instead_of_being_accepted(
    pair: tuple[RedisServer, RedisServer],
) -> None:
    master, replica = pair
    alone = queue("alone")
    replica.client(PASSWORD).replicaof("NO", "ONE")
    try:
        wait_for(
            "the master without replicas",
            lambda: master.client(PASSWORD).info("replication")["connected_slaves"] == 0,
        )
        with _durable(master) as conn:
            channel = cast(transport.Channel, conn.default_channel)
            started = time.monotonic()
            with pytest.raises(transport.PublishNotReplicated, match="reached 0 of the 1"):
                channel._put(alone.name, {"body": "unreplicated", "properties": {}})
            assert time.monotonic() - started >= transport.PUBLISH_WAIT_MS / 1000 - 0.1
        # A stock publish on the same server is accepted at once: the option makes the difference.
        with connect(redis_url(master), RELIABLE) as conn:
            publish(conn, alone, "accepted")
    finally:
        replica.client(PASSWORD).replicaof("127.0.0.1", master.port)
    wait_for("the replica back in sync", lambda: _in_sync(replica), 20)


@contextlib.contextmanager
def refusing_writes(master: RedisServer, replica: RedisServer) -> Iterator[redis.Redis]:
    """The master with min-replicas-to-write 1 and its replica detached: every write answers
    NOREPLICAS until the replica links again. Yields the master's admin client; the replica is
    linked and in sync again afterwards."""
    admin = master.client(PASSWORD)
    replica.client(PASSWORD).replicaof("NO", "ONE")
    try:
        wait_for(
            "the master without replicas",
            lambda: admin.info("replication")["connected_slaves"] == 0,
        )
        admin.config_set("min-replicas-to-write", 1)
        yield admin
    finally:
        admin.config_set("min-replicas-to-write", 0)
        replica.client(PASSWORD).replicaof("127.0.0.1", master.port)
    wait_for("the replica back in sync", lambda: _in_sync(replica), 20)


def test_a_master_refusing_writes_is_a_connection_error_clients_recover_from(
    pair: tuple[RedisServer, RedisServer],
) -> None:
    # min-replicas-to-write with no replica in sync: every write answers NOREPLICAS. kombu and
    # Celery must take it for a lost connection (retry, reconnect), not a broken command.
    master, replica = pair
    with refusing_writes(master, replica), connect(redis_url(master), RELIABLE) as conn:
        assert any(issubclass(transport.NoReplicasError, kind) for kind in conn.connection_errors)
        channel = cast(transport.Channel, conn.default_channel)
        with pytest.raises(transport.NoReplicasError, match="Not enough good replicas"):
            channel._put(queue("refused").name, {"body": "refused", "properties": {}})


def test_a_send_declaring_its_queue_waits_for_a_replica_to_link_again(
    pair: tuple[RedisServer, RedisServer],
) -> None:
    # A restarted master refuses writes until a replica has linked to it again: both the
    # queue binding that kombu's declare sends first (Celery declares the task's queue after
    # every reconnect) and the publish wait for it, where kombu's own retries have no pause.
    master, replica = pair
    to = queue("relinked")
    relink = threading.Timer(
        1.5, lambda: replica.client(PASSWORD).replicaof("127.0.0.1", master.port)
    )
    with refusing_writes(master, replica), connect(redis_url(master), RELIABLE) as conn:
        started = time.monotonic()
        relink.start()
        try:
            publish(conn, to, "sent once a replica is back")
        finally:
            relink.cancel()
        waited = time.monotonic() - started
    assert waited > 1
    assert master.client(PASSWORD, db=DB).llen(PREFIX + to.name) == 1
