"""kombu's Redis transport, with a fetch that records a message before it leaves its queue.

Fetch. kombu takes a message with BRPOP and records it as unacknowledged in a second command. A
message popped for a worker that never reads the reply (its network was cut while it waited), or
whose record fails (a stale pooled connection), is in neither place: lost (RELIABILITY.md, network
cut). Here a consumer instead runs FETCH, a server-side script that writes the message into
kombu's `unacked` hash and `unacked_index` and takes it off its queue in one step. A reply that
never arrives then leaves the message where kombu's own restore finds it: after the visibility
timeout it goes back to its queue. Everything else is kombu's: publishing, acks, rejects,
restores, fanout, priorities. A no_ack consumer (a reply queue) is fetched without a record.

Wake-ups. A script cannot block, so an idle consumer, once FETCH finds every queue empty, waits
with BRPOP on a wake list of its channel's own (`_rcbundle.wake\x06\x16<random>`), which only the
channel itself pushes to. Producers do nothing special: any producer (this transport, plain kombu
or Celery, `celery call`, Flower) publishes with kombu's LPUSH. The broker runs with
`notify-keyspace-events` containing K and l, so every LPUSH/RPUSH onto a queue key is announced
on `__keyspace@<db>__:<key>`. Each consuming channel keeps a subscription (KeyspaceSubscription:
a redis-py PubSub on the channel's own connection pool, so TLS, the ACL user and Sentinel's
master discovery are the channel's) to exactly those channels for the queue keys it consumes
(every queue x kombu priority step). There is no thread: kombu's poller (Poller here) polls the
subscription's socket beside the poll connection's, in the worker's event loop or in
drain_events alike. An `lpush` or `rpush` event read while the channel waits makes it FETCH at
once on a second connection (the wait goes on meanwhile), again while that finds messages, up to
ASIDE_MAX in a row; what is left then ends the wait with a token on its wake list, at the next
poll start, so the event loop's timers run between bursts. Without notifications (not enabled
on the server, the subscription reconnecting after a failure, with backoff) nothing is lost:
the BRPOP times out after the transport's polling_interval (kombu's brpop_timeout, 1 s by
default) and the consumer fetches anyway.

Why no wake-up is lost. An event read while a FETCH is on the wire (it may have run before the
push) makes the channel FETCH again instead of waiting. An event read while it waits fetches at
once. An event read while it may not take a message (no credit: prefetch reached) is kept, and
ends the wait with a token at the first poll start with credit again. A message pushed
while the subscription was not subscribed (start, a queue added, a reconnect) has no event, so
the server's confirmation of each subscription wakes the channel too, and so does a failed
connection (whatever came meanwhile is fetched). FETCH deletes the channel's tokens when it
finds every queue empty: a token left by a wait that ended otherwise is stale then. An event
costs each idle consumer of its queue one FETCH; all but one find nothing.

Ownership (transport option `rcbundle_owner`, set by rcbundle.loader to the worker's node name in
`celery worker`). FETCH also records `<unacked>_owner[delivery_tag] = owner`; kombu's removal of
a tag from its indices (ack, reject, restore: QoS._remove_from_indices) removes it too. The first
channel of a process that consumes with that owner restores, before its first fetch, every
message the hash gives to the owner, with kombu's QoS.restore_by_tag (back to its queue,
redelivered), and drops owner entries whose tag is no longer unacknowledged. A worker node killed
mid-task so gets its messages back when its unit restarts, not after the visibility timeout. That
is safe because nothing else can hold them: the celery_worker role runs each node as its own
systemd unit `celery-worker@NAME` with node name NAME@host, and systemd starts a unit's new
process only after its previous process and every process of its cgroup are gone. Node names
must therefore be unique among live processes (the role's are). A later channel of the same
process (Celery reconnects after a lost connection) takes back only the owner's messages this
process never received: a fetch whose reply was lost with the old connection comes back at the
reconnect, not after the visibility timeout. What the process did receive (tasks still running,
reserved ones) it keeps until it acks them; and nothing is taken back while another channel of the
owner still waits for a fetch's reply. A message the process let go of without settling it (an
ack or reject that failed with a lost connection; Celery then drops the message) is given back
by a sweep on kombu's restore timer (every 10 s) once it was fetched UNHELD_AFTER (30 s) ago,
instead of after the visibility timeout. Never in a forked child (prefork's pool processes, whose
parent is alive). Producers and beat have no owner.

Durable publish (transport option `rcbundle_publish_replicas`, N, set by rcbundle.config from
[redis.sentinel] publish_replicas). Replication is asynchronous: a message the master took can
vanish with it in a failover. With N > 0, a publish sends kombu's LPUSH and then WAIT N on the
same connection in one round trip (WAIT counts the replicas that hold that connection's writes;
it cannot run inside a script or a MULTI), and fails with PublishNotReplicated when fewer than N
replicas acknowledged within PUBLISH_WAIT_MS. kombu's producer-scoped publish batches are sent
as kombu sends them, without the wait. The user needs the `wait` command.

Sentinel. The same behaviour over Sentinel: SentinelTransport (URL `sentinel://...`, one per
Sentinel joined by ";", option `master_name`); its connections never switch to kombu's own
transport at a reconnect (stay_on_this_transport). A publish that meets a master changing hands
(READONLY from the demoted one, NOREPLICAS from a new one, or a restarted one, no replica has
linked to yet; no master known to Sentinel) is sent again, with pauses, for up to
MASTER_MOVING_SECONDS; so is the queue binding (SADD) that kombu's declare sends before a
connection's first publish to a queue: Celery declares the task's queue after every reconnect,
and kombu's retries of it have no pause. The subscription's connections come from the
Sentinel-managed pool, and it also re-checks the master's address every health_check_interval,
moving to a new master. Every Sentinel pool of the process then follows (rcbundle.sentinel), and
a consumer whose poll connection still leads to the old master drops it at the next poll start.

Health. A subscription's connection is PINGed when it was idle for health_check_interval
(redis-py's check_health, at a poll start); one that leaves MISSED_PINGS_MAX PINGs unanswered is
dropped and made again, as kombu does with its own pub/sub connection: a half-open connection
never fails on its own.

Fork safety. An os.register_at_fork hook makes each subscription in a forked child forget its
connection without touching the parent's socket; the child's own channels subscribe afresh, and
the child never restores owned messages.

Selected with Celery's broker_transport setting (rcbundle.config); the URL stays redis://,
rediss:// (or sentinel:// with SentinelTransport). Workers must use it for the safety; producers
may use anything that speaks kombu. kombu's ack_emulation=False is not supported.

kombu and redis-py internals relied on (rcbundle.versions refuses other kombu/Celery series):
- kombu.Connection: cycle (the failover iterator over its alternates, None for none) and
  completes_cycle(retries), set per connection by SentinelTransport (stay_on_this_transport).
- kombu.transport.redis.Channel: _put (its keyword _publish_batch), _get_message_priority,
  _expires, conn_or_acquire, _brpop_start, _brpop_read, _in_poll, _brpop_sent_at (the poll
  protocol of its MultiChannelPoller), handlers (type -> read callback) and _poll_error(type),
  _flush_brpop_reauth, _queue_cycle (consume, rotate), _update_queue_cycle (called by
  basic_consume and _basic_cancel when the consumed queues change), _q_for_pri, priority_steps,
  active_queues, _closing, connection_errors, client (its .connection and parse_response), pool
  (its connection_kwargs), async_pool (whose connections call the poller's
  _on_connection_disconnect hook when they disconnect), global_keyprefix, sep, unacked_key,
  unacked_index_key, brpop_timeout, health_check_interval, from_transport_options, QoS, qos,
  connection._deliver.
- kombu.transport.redis.MultiChannelPoller: _channels, _fd_to_chan, _chan_to_sock, poller,
  eventflags, on_poll_start (called by get() and by the event loop's tick) and on_readable.
- kombu.transport.redis.Transport.__init__ makes the polling_interval option brpop_timeout;
  virtual.Transport.drain_events sleeps polling_interval after a poll that delivers nothing.
- kombu.transport.redis.QoS: ack, reject, restore_visible (called by the poller's restore timer,
  with kombu's throttle inside), append (whose Redis writes FETCH replaces), _remove_from_indices
  (the one pipeline of ack, reject and restore_by_tag; restore_visible and the restore at close
  go through restore_by_tag), restore_by_tag; virtual.QoS.append. kombu's Channel._restore
  (virtual QoS only, unused by the Redis QoS) removes no owner entry; a channel that restores
  its owner's messages drops such stale entries.
- kombu's message layout: properties.delivery_tag and properties.delivery_info
  (exchange, routing_key); the unacked entry [message, exchange, routing_key] (JSON).
- kombu's prefixing client prefixes BRPOP and HDEL (used through kombu's pipeline) but not
  EVAL, HSCAN or pub/sub channel names: those are prefixed here, on plain redis-py clients.
- redis-py: SentinelManagedConnection.read_response's ConnectionError for READONLY (its message,
  SENTINEL_READONLY_MESSAGE), BaseParser.EXCEPTION_CLASSES (reply prefix -> exception class;
  NOREPLICAS is added, as NoReplicasError), Connection._sock (whether a fetch's reply can still
  arrive on it; the socket to poll), Connection.can_read, PubSub (subscribe and unsubscribe,
  which send without reading; subscribed, get_message(timeout=0), check_health,
  health_check_response_counter, close, and __del__, which closes the connection of a PubSub
  collected unclosed), Connection host/port, SentinelConnectionPool.get_master_address,
  ConnectionPool.connection_kwargs["db"], and its fork check (a pool used in a forked child
  starts afresh).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import uuid
import weakref
from collections.abc import Callable, Iterable
from queue import Empty
from time import monotonic, sleep, time
from typing import TYPE_CHECKING, Any, cast

from rcbundle import versions
from rcbundle.config import OWNER_OPTION, PUBLISH_REPLICAS_OPTION, SOCKET_TIMEOUT

versions.check()  # below kombu's public API: refuse an untested kombu

from rcbundle import sentinel  # noqa: E402

sentinel.install()  # every Sentinel pool of the process follows a master move at once

import redis  # noqa: E402
from kombu import Connection, Message  # noqa: E402
from kombu.transport import redis as kombu_redis  # noqa: E402
from kombu.transport import virtual  # noqa: E402
from kombu.utils.encoding import bytes_to_str  # noqa: E402
from kombu.utils.json import dumps, loads  # noqa: E402
from kombu.utils.objects import cached_property  # noqa: E402
from redis._parsers import base as _parsers_base  # noqa: E402
from redis.client import Pipeline, PubSub  # noqa: E402
from redis.sentinel import MasterNotFoundError, SentinelConnectionPool  # noqa: E402

logger = logging.getLogger(__name__)

# KEYS: n queue keys (in consuming order), unacked, unacked_index, unacked_owner, then the
# channel's wake list. ARGV: now, n, owner ("" = none), then per queue key "1" (record it: a
# consumer that acknowledges) or "0" (no_ack). The record is written before the message is
# removed, and allow-oom lets it be written on a full noeviction server, where taking the message
# and then failing to record it would lose it.
FETCH = """#!lua flags=allow-oom
local n = tonumber(ARGV[2])
local owner = ARGV[3]
for i = 1, n do
  local item = redis.call('LINDEX', KEYS[i], -1)
  if item then
    if ARGV[i + 3] == '1' then
      local ok, message = pcall(cjson.decode, item)
      local props = ok and type(message) == 'table' and message['properties']
      if type(props) == 'table' and type(props['delivery_tag']) == 'string'
          and type(props['delivery_info']) == 'table' then
        local tag = props['delivery_tag']
        local info = props['delivery_info']
        local entry = '[' .. item .. ',' .. cjson.encode(info['exchange'] or '') .. ','
          .. cjson.encode(info['routing_key'] or '') .. ']'
        redis.call('HSET', KEYS[n + 1], tag, entry)
        redis.call('ZADD', KEYS[n + 2], ARGV[1], tag)
        if owner ~= '' then
          redis.call('HSET', KEYS[n + 3], tag, owner)
        else
          redis.call('HDEL', KEYS[n + 3], tag)
        end
      end
    end
    redis.call('RPOP', KEYS[i])
    return {i, item}
  end
end
-- Every queue is empty: a token left behind (a wait that ended otherwise) is stale.
for i = n + 4, #KEYS do
  redis.call('DEL', KEYS[i])
end
return false
"""

# KEYS: unacked, unacked_owner. ARGV: delivery tags. Drops each tag's owner entry if the tag is
# no longer unacknowledged (checked and dropped in one step: a FETCH cannot come in between).
DROP_STALE_OWNERS = """
local dropped = 0
for i = 1, #ARGV do
  if redis.call('HEXISTS', KEYS[1], ARGV[i]) == 0 then
    dropped = dropped + redis.call('HDEL', KEYS[2], ARGV[i])
  end
end
return dropped
"""

# An idle consumer's wait: BRPOP on its channel's own wake list, which nothing but the channel
# itself pushes to (_wake_the_wait), so a token always ends the wait it is meant for.
WAKE_PREFIX = "_rcbundle.wake"
# A wake list nobody consumes any more disappears this long after its last token.
WAKE_TTL_MS = 60_000
OWNER_SUFFIX = "_owner"  # the owner hash is kombu's unacked_key + this: "unacked_owner"
OPTIONS = (OWNER_OPTION, PUBLISH_REPLICAS_OPTION)
# How long a publish waits for its replicas (rcbundle_publish_replicas) before it fails.
PUBLISH_WAIT_MS = 2000
# How long a publish is sent again, with pauses, while the master is changing hands (a
# switchover or a failover: the old master demoted, the new one without a linked replica yet).
# kombu's own retries (Celery's task_publish_retry_policy) reconnect without a pause, and all
# of them met the same old master: a rolling restart's switchover refused sends.
# That is the wait of one send in all, however many times kombu retries it: refusals of the same
# write less than this apart, with no write taken between them, are one wait (_MasterMoving).
MASTER_MOVING_SECONDS = 10.0
# What redis-py's SentinelManagedConnection raises for READONLY on a master connection.
SENTINEL_READONLY_MESSAGE = "The previous master is now a slave"

# The keyspace events that put a message on a queue: kombu's publish (LPUSH), restore (RPUSH, or
# LPUSH for a requeued reject).
PUSH_EVENTS = frozenset({b"lpush", b"rpush"})
BACKOFF_SECONDS = (0.1, 5.0)  # first and longest pause between reconnects
# A subscription whose connection has this many PINGs unanswered is dropped (as kombu does with
# its own pub/sub connection): a half-open connection never fails on its own.
MISSED_PINGS_MAX = 2
STALE_BATCH = 500
# At most this many messages are fetched and delivered in a row on waking (_keyspace_read).
ASIDE_MAX = 10
# How long after its fetch a message that this process does not hold is given back (the sweep
# in ReliableFetch._restore_unheld): twice the poll connection's socket timeout.
UNHELD_AFTER = 2 * SOCKET_TIMEOUT

_FETCH = "fetch"
_WAIT = "wait"
# The poller's type of a channel's keyspace subscription (kombu's are BRPOP and LISTEN).
KEYSPACE = "KEYSPACE"

# Owners whose messages this process has restored; a forked child restores none.
_restored_owners: set[str] = set()
# Per owner, the delivery tags this process received and has not yet acked, rejected or restored.
_held: dict[str, set[str]] = {}
# The channels of this process that consume with an owner.
_consuming: weakref.WeakSet[ReliableFetch] = weakref.WeakSet()
_forked = False
_subscriptions: weakref.WeakSet[KeyspaceSubscription] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    global _forked
    _forked = True
    for subscription in list(_subscriptions):
        subscription.after_fork_in_child()


os.register_at_fork(after_in_child=_after_fork_in_child)


class KeyspaceSubscription:
    """A consuming channel's subscription to its queues' keyspace channels (module docstring).

    No thread: the channel's poller (Poller) polls its socket beside the channel's poll
    connection, read() takes what arrived, and tick(), on every poll start, reconnects after a
    failure (with backoff) and checks the connection's health. Every error ends in fail(), which
    logs it and drops the connection: the consumers then wait at most their polling interval.
    """

    def __init__(self, pool: redis.ConnectionPool, health_check_interval: float) -> None:
        self._pool = pool
        self._interval = health_check_interval
        self.pubsub: PubSub | None = None
        self._wanted: frozenset[bytes] = frozenset()
        self._subscribed: set[bytes] = set()
        self._pause = BACKOFF_SECONDS[0]
        self._retry_at = 0.0  # monotonic: no new connection before
        self._next_check = 0.0
        _subscriptions.add(self)

    @property
    def socket(self) -> socket.socket | None:
        """The socket to poll, or None (not connected)."""
        connection = self.pubsub.connection if self.pubsub is not None else None
        return cast("socket.socket | None", getattr(connection, "_sock", None))

    def watch(self, wanted: Iterable[bytes]) -> None:
        """Be subscribed to exactly these keyspace channels (none: no connection at all)."""
        self._wanted = frozenset(wanted)
        self._sync()

    def _sync(self) -> None:
        if not self._wanted:
            self._drop()  # an unsubscribed PubSub would not read its socket: no socket at all
            return
        if self.pubsub is None:
            if monotonic() < self._retry_at:
                return  # tick() comes back
            self.pubsub = PubSub(self._pool)
            self._subscribed = set()
            self._next_check = monotonic() + self._interval
        try:
            gone = self._subscribed - self._wanted
            if gone:
                cast(Any, self.pubsub).unsubscribe(*gone)  # untyped in redis-py
                self._subscribed -= gone
            new = self._wanted - self._subscribed
            if new:
                # Sent, not read: the confirmation comes through read(), like any event.
                self.pubsub.subscribe(*new)
                self._subscribed |= new
        except Exception as exc:  # the connection, a refused AUTH
            self.fail(exc)

    def read(self) -> bool:
        """Read everything that arrived: whether a watched queue may have got a message.

        A push onto a watched queue key wakes, and so does the server's confirmation of a
        subscription: what was pushed before it went unannounced.
        """
        pubsub = self.pubsub
        woken = False
        try:
            while pubsub is not None and pubsub.subscribed:
                message = pubsub.get_message(timeout=0)
                if message is None:  # nothing (or a PONG): stop once nothing is buffered either
                    connection = pubsub.connection
                    if connection is None or not connection.can_read(timeout=0):
                        break
                    continue
                if message["channel"] not in self._wanted:
                    continue
                if message["type"] == "subscribe":
                    self._pause = BACKOFF_SECONDS[0]  # connected again
                    woken = True
                elif message["type"] == "message" and message["data"] in PUSH_EVENTS:
                    woken = True
        except Exception as exc:  # the connection, a subscription the ACL refuses
            self.fail(exc)
            # A message may have come meanwhile: the caller fetches, so that the outage costs
            # nothing it can avoid.
            return True
        return woken

    def tick(self) -> None:
        """On every poll start: reconnect when the backoff has passed, check health when due."""
        if self.pubsub is None:
            if self._wanted and monotonic() >= self._retry_at:
                self._sync()
            return
        if not self._interval or monotonic() < self._next_check:
            return
        self._next_check = monotonic() + self._interval
        pubsub = self.pubsub
        try:
            if pubsub.health_check_response_counter >= MISSED_PINGS_MAX:
                raise redis.ConnectionError(
                    f"the keyspace subscriber's connection left {MISSED_PINGS_MAX} PINGs unanswered"
                )
            self._check_master()
            if pubsub.connection is not None:
                pubsub.check_health()  # a PING, if nothing was read for an interval
        except _MasterMoved as moved:
            logger.info("rcbundle.transport: keyspace subscriber follows %s", moved)
            self._drop()
            self._sync()
        except Exception as exc:
            self.fail(exc)

    def _check_master(self) -> None:
        pool = self._pool
        connection = self.pubsub.connection if self.pubsub is not None else None
        if not isinstance(pool, SentinelConnectionPool) or connection is None:
            return
        try:
            address = pool.get_master_address()
        except redis.RedisError:  # no Sentinel answers now: the master we have may well be it
            return
        if (connection.host, connection.port) != tuple(address):
            raise _MasterMoved(f"the master, now at {address[0]}:{address[1]}")

    def fail(self, exc: BaseException) -> None:
        logger.warning(
            "rcbundle.transport: keyspace subscriber lost its connection (%s: %s); consumers "
            "wait up to the polling interval until it is back in %.1f s",
            type(exc).__name__,
            exc,
            self._pause,
        )
        self._drop()
        self._retry_at = monotonic() + self._pause
        self._pause = min(self._pause * 2, BACKOFF_SECONDS[1])

    def _drop(self) -> None:
        pubsub, self.pubsub = self.pubsub, None
        self._subscribed = set()
        if pubsub is not None:
            with contextlib.suppress(Exception):
                pubsub.close()

    def close(self) -> None:
        self._wanted = frozenset()
        self._drop()

    def after_fork_in_child(self) -> None:
        # The parent's socket: left alone (the child must not unsubscribe or shut it down), and
        # nothing is watched here until the child's own channel asks.
        self.pubsub = None
        self._subscribed = set()
        self._wanted = frozenset()


class _MasterMoved(Exception):
    """Sentinel names another master than the one the subscriber is connected to."""


class NoReplicasError(redis.ConnectionError):
    """NOREPLICAS: the master refuses writes while fewer replicas than min-replicas-to-write
    are in sync (a master cut off from the others, restarted, or every replica gone).

    redis-py raises it as a plain ResponseError, which kombu and Celery take for a broken
    command: the worker exited ("Unrecoverable error") and systemd restarted it, again and
    again, until a replica came back. Registered with redis-py's parser as a connection error
    instead, so clients reconnect and retry with backoff (through Sentinel: to a new master once
    there is one), as for LOADING (redis-py's BusyLoadingError). Not a ResponseError as well:
    redis-py's pipelines take a ResponseError for one command's answer and read on, on the
    connection the parser has just closed for the connection error (an AttributeError; kombu's
    queue binding is such a pipeline).
    """


def _register_noreplicas() -> None:
    """Map NOREPLICAS to NoReplicasError in redis-py's reply parser (its EXCEPTION_CLASSES);
    a redis-py without that table keeps its ResponseError."""
    table = getattr(_parsers_base.BaseParser, "EXCEPTION_CLASSES", None)
    if isinstance(table, dict):
        table.setdefault("NOREPLICAS", NoReplicasError)


_register_noreplicas()


def master_moving(exc: BaseException) -> bool:
    """Whether a publish failed because the master is changing hands: the old one demoted
    (READONLY, which redis-py's Sentinel connection turns into this ConnectionError), or a new
    one that no replica has linked to yet (NOREPLICAS), or no master known to Sentinel."""
    return (
        isinstance(exc, (NoReplicasError, MasterNotFoundError))
        or str(exc) == SENTINEL_READONLY_MESSAGE
    )


class _MasterMoving(threading.local):
    """This thread's current wait for a moving master: the write it is for (_while_master_moves'
    key), when its first refusal came and when its latest did (monotonic seconds)."""

    key: object = None
    since: float = float("-inf")
    last: float = float("-inf")


_moving = _MasterMoving()


def _while_master_moves(what: str, key: object, write: Callable[[], None]) -> None:
    """WRITE, done again with growing pauses while it fails because the master is moving (a
    write refused, so nothing was written: sending it again is safe); then its error goes to
    kombu (Celery's publish retry policy). One write waits MASTER_MOVING_SECONDS at most in all,
    counted from its first refusal, however many times kombu retries it: kombu retries a failed
    publish after reconnecting, which takes from milliseconds (the master answers) to seconds (a
    Sentinel or a server that does not), and a master that keeps refusing (every replica gone)
    would otherwise hold each of those retries that long again, a send for minutes. KEY names
    the write across kombu's retries (each builds a new channel and a new delivery tag): the
    queue and the message's body and headers, or the binding. A wait ends when a write is
    taken, when another write is refused (a new send: a caller sending again after a failure
    gets a wait of its own), or when no refusal came for MASTER_MOVING_SECONDS. Every retry
    still tries its write first: one the master takes goes through."""
    pause = 0.1
    while True:
        try:
            write()
        except redis.ConnectionError as exc:
            if not master_moving(exc):
                raise
            now = monotonic()
            if key != _moving.key or now - _moving.last > MASTER_MOVING_SECONDS:
                _moving.key, _moving.since = key, now
            _moving.last = now
            if now + pause > _moving.since + MASTER_MOVING_SECONDS:
                raise
            logger.info("rcbundle.transport: %s waits for the new master (%s)", what, exc)
            sleep(pause)
            pause = min(pause * 2, 1.0)
        else:
            _moving.key, _moving.since, _moving.last = None, float("-inf"), float("-inf")
            return


class PublishNotReplicated(redis.ConnectionError):
    """A published message reached the master but not enough replicas in time.

    A connection error, so kombu's and Celery's publish retry policy sends it again (through
    Sentinel, to whichever server is the master by then) and, when it keeps failing, the send
    fails for its caller: never an accepted task that a failover could lose. A message sent
    twice this way runs twice (at-least-once delivery).
    """


class QoS(kombu_redis.QoS):
    def append(self, message: Message, delivery_tag: str) -> None:
        fetched = cast("ReliableFetch", self.channel).fetched_tags
        if delivery_tag in fetched:
            # FETCH already recorded it in Redis; only the in-process bookkeeping is left.
            fetched.discard(delivery_tag)
            virtual.QoS.append(self, message, delivery_tag)
        else:  # basic_get, kombu's own path
            super().append(message, delivery_tag)

    def _release(self, delivery_tag: str) -> None:
        """The process is done with the message: not held any more, whatever Redis answers."""
        owner = cast("ReliableFetch", self.channel).owner
        if owner:
            _held.get(owner, set()).discard(delivery_tag)

    def ack(self, delivery_tag: str) -> None:
        self._release(delivery_tag)
        super().ack(delivery_tag)

    def reject(self, delivery_tag: str, requeue: bool = False) -> None:
        # An ack or reject can fail (a connection lost meanwhile): Celery then drops the message,
        # which stays in unacked, recorded as this owner's. No longer held, the sweep below gives
        # it back instead of the visibility timeout.
        self._release(delivery_tag)
        super().reject(delivery_tag, requeue=requeue)

    def restore_visible(self, start: int = 0, num: int = 10, interval: int = 10) -> None:
        # kombu's poller calls this every unacked_restore_interval (10 s); kombu's own scan
        # runs on every interval-th call only, this sweep on every call.
        cast("ReliableFetch", self.channel)._restore_unheld()
        super().restore_visible(start, num, interval)

    def _remove_from_indices(self, delivery_tag: str, pipe: Pipeline | None = None) -> Pipeline:
        # kombu's one removal for ack, reject and restore_by_tag; its pipeline prefixes HDEL.
        self._release(delivery_tag)
        removal: Any = cast(Any, super())._remove_from_indices(delivery_tag, pipe)
        removal.hdel(self.unacked_owner_key, delivery_tag)  # queued on that pipeline
        return cast(Pipeline, removal)

    @cached_property
    def unacked_owner_key(self) -> str:
        return cast("ReliableFetch", self.channel).unacked_owner_key


if TYPE_CHECKING:
    _ChannelBase = kombu_redis.Channel
else:
    _ChannelBase = object


class ReliableFetch(_ChannelBase):
    """FETCH, keyspace wake-ups and ownership, for kombu's Redis channel and its Sentinel one."""

    QoS = QoS
    rcbundle_owner: str = ""  # the transport option (OWNER_OPTION)
    rcbundle_publish_replicas: int = 0  # the transport option (PUBLISH_REPLICAS_OPTION)

    # kombu's own, which its type stubs (celery-types) leave out.
    _closing: bool
    _queue_cycle: Any
    _q_for_pri: Callable[[str, int], str]
    _flush_brpop_reauth: Callable[[], None]
    connection_errors: tuple[type[BaseException], ...]

    def __init__(self, *args: object, **kwargs: object) -> None:
        self.fetched_tags: set[str] = set()
        self._noack_queues: set[str] = set()
        self._poll_state: str | None = None
        self._poll_keys: list[tuple[str, str]] = []
        self._keyspace: KeyspaceSubscription | None = None
        # A watched queue may have got a message since the last fetch was sent.
        self._woken = False
        self._side: redis.Redis | None = None
        super().__init__(*args, **kwargs)
        self.wake_key = f"{WAKE_PREFIX}{self.sep}{uuid.uuid4().hex}"
        self.handlers[KEYSPACE] = self._keyspace_read

    @property
    def owner(self) -> str:
        return str(self.rcbundle_owner or "")

    @property
    def unacked_owner_key(self) -> str:
        return self.unacked_key + OWNER_SUFFIX

    def basic_consume(
        self,
        queue: str,
        no_ack: bool,
        callback: Callable[..., Any] | None,
        consumer_tag: str | None,
        **kwargs: object,
    ) -> str:
        (self._noack_queues.add if no_ack else self._noack_queues.discard)(queue)
        if not no_ack:
            self._restore_owned()
            if self.owner:
                _consuming.add(self)
        tag: str = super().basic_consume(queue, no_ack, callback, consumer_tag, **kwargs)
        return tag

    def _put(self, queue: str, message: dict[str, Any], **kwargs: object) -> None:
        """One publish, sent again while the master is moving (module docstring: Sentinel)."""
        key = ("publish", queue, str(message.get("body")), repr(message.get("headers")))
        _while_master_moves("publish", key, lambda: self._put_once(queue, message, **kwargs))

    def _queue_bind(self, exchange: str, routing_key: str, pattern: str, queue: str) -> None:
        """kombu's binding (the declare before a publish), sent again while the master moves."""
        bind = cast(Any, super())._queue_bind
        what = "queue binding"
        _while_master_moves(
            what,
            (what, exchange, routing_key, queue),
            lambda: bind(exchange, routing_key, pattern, queue),
        )

    def _put_once(self, queue: str, message: dict[str, Any], **kwargs: object) -> None:
        """kombu's publish, then WAIT on the same connection for rcbundle_publish_replicas
        replicas (module docstring: Durable publish)."""
        replicas = int(self.rcbundle_publish_replicas or 0)
        if replicas < 1 or kwargs.get("_publish_batch") is not None:
            super()._put(queue, message, **kwargs)
            return
        priority = self._get_message_priority(message, reverse=False)
        expires = getattr(self, "_expires", None) or {}
        with self.conn_or_acquire() as client, client.pipeline(transaction=False) as pipe:
            pipe.lpush(self._q_for_pri(queue, priority), dumps(message))
            if queue in expires:
                for step in self.priority_steps:
                    pipe.pexpire(self._q_for_pri(queue, step), expires[queue])
            pipe.wait(replicas, PUBLISH_WAIT_MS)
            acknowledged = pipe.execute()[-1]
        if int(acknowledged) < replicas:
            raise PublishNotReplicated(
                f"a message for queue {queue!r} reached {acknowledged} of the {replicas} replicas"
                f" rcbundle_publish_replicas asks for within {PUBLISH_WAIT_MS} ms"
            )

    def _restore_owned(self) -> None:
        """Give back what this owner's previous process fetched and left (module docstring)."""
        owner = self.owner
        if not owner or _forked:
            return
        # After a reconnect, only what this process never received: a fetch whose reply was
        # lost with the old connection. What it did receive (a task still running) stays. Not
        # while another channel of the owner waits for a fetch's reply: it may yet arrive.
        again = owner in _restored_owners
        if again and any(other._awaits_fetch_reply(owner) for other in list(_consuming)):
            return
        held = _held.get(owner, set()) if again else set()
        prefix = self.global_keyprefix
        plain = redis.Redis(connection_pool=self.pool)  # our own commands, prefixed here
        mine: list[str] = []
        others: list[bytes] = []
        for tag, holder in plain.hscan_iter(prefix + self.unacked_owner_key):
            if holder == owner.encode():
                if bytes_to_str(tag) not in held:
                    mine.append(bytes_to_str(tag))
            else:
                others.append(tag)
        for tag in mine:  # also drops the entry of a tag no longer unacked
            cast(QoS, self.qos).restore_by_tag(tag)
        for start in range(0, len(others), STALE_BATCH):
            plain.eval(
                DROP_STALE_OWNERS, 2, prefix + self.unacked_key, prefix + self.unacked_owner_key,
                *others[start : start + STALE_BATCH],
            )  # fmt: skip
        _restored_owners.add(owner)
        if mine:
            logger.info(
                "rcbundle.transport: %d message(s) fetched by %s %s went back to their queues",
                len(mine),
                owner,
                "whose reply was lost with a connection" if again else "before it restarted",
            )

    def _restore_unheld(self) -> None:
        """Give back this owner's messages that this process fetched and let go of unsettled.

        An ack or reject that failed (the connection went during a network cut), or a fetch
        whose reply went with a connection after the reconnect's own restore: such a message
        stays in unacked as this owner's, held by nobody, until the visibility timeout. Here it
        goes back once it was fetched more than UNHELD_AFTER seconds ago (longer than any fetch
        reply can take to be read: the poll connection's socket timeout, twice), and never while
        a fetch of the owner's waits for its reply (it may carry one of them).
        """
        owner = self.owner
        if not owner or _forked or owner not in _restored_owners:
            return  # a channel's first restore gives back everything of the owner's
        if any(other._awaits_fetch_reply(owner) for other in list(_consuming)):
            return
        prefix = self.global_keyprefix
        plain = redis.Redis(connection_pool=self.pool)
        held = _held.get(owner, set())
        candidates = [
            bytes_to_str(tag)
            for tag, holder in plain.hscan_iter(prefix + self.unacked_owner_key)
            if holder == owner.encode() and bytes_to_str(tag) not in held
        ]
        if not candidates:
            return
        with plain.pipeline(transaction=False) as pipe:
            for tag in candidates:
                pipe.zscore(prefix + self.unacked_index_key, tag)
            fetched_at = pipe.execute()
        ceiling = time() - UNHELD_AFTER
        stale = [
            tag
            for tag, at in zip(candidates, fetched_at, strict=True)
            if at is not None and float(at) < ceiling
        ]
        for tag in stale:
            cast(QoS, self.qos).restore_by_tag(tag)
        if stale:
            logger.warning(
                "rcbundle.transport: %d message(s) of %s left unsettled (an ack or reject that "
                "failed, a lost fetch reply) went back to their queues",
                len(stale),
                owner,
            )

    def _awaits_fetch_reply(self, owner: str) -> bool:
        """A fetch of owner's is on the wire here, its reply can still arrive (an open socket)."""
        if self.owner != owner or self._poll_state != _FETCH or self._closing:
            return False
        connection = self.__dict__.get("client") and self.client.connection
        return connection is not None and getattr(connection, "_sock", None) is not None

    def _update_queue_cycle(self) -> None:
        # kombu calls this from basic_consume and _basic_cancel, once the queues have changed.
        cast(Any, super())._update_queue_cycle()
        if self._closing:
            # kombu's close cancels every consumer after it dropped the pools, and the transport
            # may have lost its connection already (kombu's Connection._do_close_transport):
            # the pool cannot be asked for its database then, and the subscription is closed.
            return
        wanted = self._keyspace_channels()
        if self._keyspace is None:
            if not wanted:
                return
            # The async pool: kombu's event loop unregisters its sockets on disconnect. It holds
            # the channel, so the subscription lives exactly as long as the channel does; a
            # channel nobody closes (Celery's app.close() only drops its pool) is collected with
            # its subscription, whose PubSub closes its connection then (redis-py's __del__).
            self._keyspace = KeyspaceSubscription(
                self.async_pool, float(self.health_check_interval or 0)
            )
        self._keyspace.watch(wanted)

    def _keyspace_channels(self) -> set[bytes]:
        db = self.pool.connection_kwargs.get("db", 0)
        prefix = self.global_keyprefix
        return {
            f"__keyspace@{db}__:{prefix}{self._q_for_pri(queue, pri)}".encode()
            for queue in self.active_queues
            for pri in self.priority_steps
        }

    def close(self) -> None:
        if self._keyspace is not None:
            self._keyspace.close()
        super().close()

    def _poll_error(self, type: str, **options: object) -> None:
        if type == KEYSPACE:  # the subscription's socket reported an error: read() meets it
            self._keyspace_read()
        else:
            cast(Any, super())._poll_error(type, **options)

    # Wake-ups (module docstring). The poller calls _keyspace_read when the subscription's
    # socket is readable, and _keyspace_tick on every poll start.

    def _keyspace_read(self) -> None:
        subscription = self._keyspace
        if subscription is None or not subscription.read():
            raise Empty()
        if self._poll_state != _WAIT:
            self._woken = True  # a fetch on the wire may have run before the push: fetch again
            raise Empty()
        # The poll connection waits on the wake list: fetch on a connection of our own now, and
        # again while that finds messages (a burst), up to ASIDE_MAX, so that the event loop's
        # timers still run between bursts.
        delivered = 0
        while True:
            if delivered == ASIDE_MAX or self._closing or not self.qos.can_consume():
                self._woken = True  # more may be queued: _keyspace_tick ends the wait
                break
            if not self._fetch_aside():
                break  # every queue empty: the wait goes on
            delivered += 1
        if not delivered:
            raise Empty()

    def _keyspace_tick(self) -> None:
        if self._keyspace is not None:
            self._keyspace.tick()
        self._leave_an_old_master()
        if (
            self._woken
            and self._poll_state == _WAIT
            and not self._closing
            and self.qos.can_consume()
        ):
            self._wake_the_wait()

    def _leave_an_old_master(self) -> None:
        """Drop the poll connection once its pool knows the master is elsewhere (Sentinel:
        rcbundle.sentinel): a frozen old master never ends the wait, and kombu's own check
        would only drop it after brpop_timeout + health_check_interval, counted from a poll
        start the blocked event loop may not have reached."""
        connection = self._in_poll
        address = getattr(getattr(connection, "connection_pool", None), "master_address", None)
        if not connection or address is None or getattr(connection, "_sock", None) is None:
            return
        if (connection.host, connection.port) != tuple(address):
            logger.warning(
                "rcbundle.transport: the master moved to %s:%s; dropping the poll connection "
                "to %s:%s",
                address[0],
                address[1],
                connection.host,
                connection.port,
            )
            connection.disconnect()

    def _fetch_aside(self) -> bool:
        """One FETCH, answered at once, beside the poll connection's wait: whether it delivered."""
        if self._side is None:
            self._side = redis.Redis(connection_pool=self.pool)
        keys = self._plan()
        if not keys:
            return False
        try:
            reply = cast(Any, self._side).execute_command(*self._fetch_command(keys))
        except redis.RedisError as exc:
            # What the script took with a lost reply is in unacked: the sweep or the visibility
            # timeout gives it back. The poll goes on as if nothing had woken it.
            logger.warning("rcbundle.transport: a fetch on waking failed (%s: %s)",
                           type(exc).__name__, exc)  # fmt: skip
            return False
        if not reply:
            return False
        self._take(keys, reply)
        return True

    def _wake_the_wait(self) -> None:
        """End this channel's BRPOP at once: a token on its own wake list."""
        self._woken = False
        if self._side is None:
            self._side = redis.Redis(connection_pool=self.pool)
        key = self.global_keyprefix + self.wake_key
        try:
            with self._side.pipeline(transaction=False) as pipe:
                pipe.lpush(key, "1")
                pipe.pexpire(key, WAKE_TTL_MS)
                pipe.execute()
        except redis.RedisError as exc:  # a full noeviction broker, say: the wait times out
            logger.debug("rcbundle.transport: no wake token (%s)", exc)

    # A poll runs FETCH on the poll connection; when every queue is empty, it goes on to BRPOP on
    # the channel's wake list until a token or the timeout. kombu's poller then starts the next
    # poll.

    def _plan(self) -> list[tuple[str, str]]:
        """(key, queue) for every queue consumed, in consuming order, and each priority step."""
        queues = self._queue_cycle.consume(len(self.active_queues))
        return [
            (self._q_for_pri(queue, pri), queue) for pri in self.priority_steps for queue in queues
        ]

    def _brpop_start(self, timeout: float | None = None) -> None:
        keys = self._plan()
        if not keys:
            return
        self._poll_keys = keys
        self._send_fetch()

    def _send(self, state: str, *command: object) -> None:
        # Keys are prefixed here: kombu's prefixing client knows BRPOP, but prefixes only EVALSHA's
        # first key and not EVAL's at all.
        self._poll_state = state
        self._in_poll = self.client.connection
        self._brpop_sent_at = monotonic()
        self.client.connection.send_command(*command)

    def _fetch_command(self, keys: list[tuple[str, str]]) -> list[object]:
        prefix = self.global_keyprefix
        names = [key for key, _ in keys]
        names += [self.unacked_key, self.unacked_index_key, self.unacked_owner_key, self.wake_key]
        record = ["0" if queue in self._noack_queues else "1" for _, queue in keys]
        return [
            "EVAL", FETCH, len(names), *[prefix + name for name in names],
            f"{time():.6f}", len(keys), self.owner, *record,
        ]  # fmt: skip

    def _send_fetch(self) -> None:
        self._woken = False  # this fetch sees every push announced so far
        self._send(_FETCH, *self._fetch_command(self._poll_keys))

    def _send_wait(self) -> None:
        self._send(_WAIT, "BRPOP", self.global_keyprefix + self.wake_key, self.brpop_timeout or 1)

    def _end_poll(self) -> None:
        self._poll_state = None
        self._in_poll = None
        # The connection is idle now: kombu's moment to send a pending re-auth token.
        self._flush_brpop_reauth()

    def _take(self, keys: list[tuple[str, str]], reply: list[Any]) -> None:
        """Deliver what FETCH returned: [index into keys, the message]."""
        index, item = reply
        _, queue = keys[int(index) - 1]
        self._queue_cycle.rotate(queue)
        message = loads(bytes_to_str(item))
        if queue not in self._noack_queues:
            tag = message["properties"]["delivery_tag"]
            self.fetched_tags.add(tag)
            if self.owner:
                _held.setdefault(self.owner, set()).add(tag)
        self.connection._deliver(message, queue)

    def _brpop_read(self, **options: object) -> bool:
        state = self._poll_state
        connection = self.client.connection
        try:
            command = "BRPOP" if state == _WAIT else "EVAL"
            reply = self.client.parse_response(connection, command, **options)
        except self.connection_errors:
            connection.disconnect()  # the next poll reconnects
            self._end_poll()
            raise
        except BaseException:
            self._end_poll()
            raise
        if state == _FETCH and reply:
            self._end_poll()
            self._take(self._poll_keys, reply)
            return True
        if state == _FETCH and not self._closing and self.qos.can_consume():
            if self._woken:
                self._send_fetch()  # a push announced while the fetch was on the wire
            else:
                self._send_wait()  # every queue empty
        else:
            # A token, or the wait timed out: the next poll fetches again, from the queues
            # consumed by then (a consumer added or cancelled meanwhile counts).
            self._end_poll()
        raise Empty()


class Channel(ReliableFetch, kombu_redis.Channel):
    from_transport_options = kombu_redis.Channel.from_transport_options + OPTIONS


class SentinelChannel(ReliableFetch, kombu_redis.SentinelChannel):
    from_transport_options = kombu_redis.SentinelChannel.from_transport_options + OPTIONS


if TYPE_CHECKING:
    _TransportBase = kombu_redis.Transport
else:
    _TransportBase = object


class Poller(kombu_redis.MultiChannelPoller):
    """kombu's poller, which also polls each channel's keyspace subscription (type KEYSPACE)."""

    # kombu's own, which its type stubs (celery-types) leave out.
    _channels: set[Any]
    _chan_to_sock: dict[tuple[Any, Any, str], socket.socket]
    _fd_to_chan: dict[int, tuple[Any, str]]

    def on_poll_start(self) -> None:
        super().on_poll_start()
        for channel in list(self._channels):
            if isinstance(channel, ReliableFetch):
                channel._keyspace_tick()
                self._register_keyspace(channel)

    def _register_keyspace(self, channel: ReliableFetch) -> None:
        """Poll the subscription's current socket, and forget any earlier one of it.

        In an event loop kombu's own disconnect hook has already unregistered a socket that
        went (it matches the registration's pubsub.connection); without one (drain_events) a
        closed socket has left epoll on its own, and only the maps are cleaned here.
        """
        subscription = channel._keyspace
        pubsub = subscription.pubsub if subscription is not None else None
        sock = subscription.socket if subscription is not None else None
        ident = (channel, pubsub, KEYSPACE)
        for key, registered in list(self._chan_to_sock.items()):
            if (
                key[0] is channel
                and key[2] == KEYSPACE
                and (key != ident or registered is not sock)
            ):
                del self._chan_to_sock[key]
        fileno = sock.fileno() if sock is not None else None
        for fd, chan_type in list(self._fd_to_chan.items()):
            if chan_type == (channel, KEYSPACE) and fd != fileno:
                del self._fd_to_chan[fd]
        if sock is not None and fileno is not None and ident not in self._chan_to_sock:
            self._fd_to_chan[fileno] = (channel, KEYSPACE)
            self._chan_to_sock[ident] = sock
            self.poller.register(sock, self.eventflags)

    def on_readable(self, fileno: int) -> None:
        chan_type = self._fd_to_chan.get(fileno)
        if chan_type is not None and chan_type[1] == KEYSPACE:
            # Whether or not the channel can take a message now: unread, the socket would stay
            # readable and spin the loop (kombu reads only BRPOP and LISTEN sockets then).
            chan_type[0].handlers[KEYSPACE]()
            return
        super().on_readable(fileno)


class PollWithoutSleep(_TransportBase):
    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self.cycle = Poller()  # before any channel: kombu's MultiChannelPoller, which it extends
        # kombu has made the polling_interval option the BRPOP timeout (brpop_timeout). Its
        # drain_events would also sleep that long after each poll that delivers nothing, and a
        # poll here ends so after every wait (an empty fetch, a token): the wait is the pause.
        self.polling_interval = None  # kombu redis transport's own default


class Transport(PollWithoutSleep, kombu_redis.Transport):
    Channel = Channel


class SentinelTransport(PollWithoutSleep, kombu_redis.SentinelTransport):
    """Module docstring: Sentinel (a connection of this transport never switches URL)."""

    Channel = SentinelChannel

    def __init__(self, client: Connection, *args: object, **kwargs: object) -> None:
        super().__init__(client, *args, **kwargs)
        stay_on_this_transport(client)


def stay_on_this_transport(client: Connection) -> None:
    """Turn off kombu's failover between the URLs of a connection's ";" list (one per
    Sentinel). At each connection error kombu switched to the next URL and took the transport
    from its scheme (Connection.switch): kombu's own SentinelTransport from then on, without
    this module (a refused send, a fetch without ownership). Sentinel needs no such failover:
    every connection pool asks each Sentinel of the list (kombu's SentinelChannel reads them
    from the connection's alternates, which stay). A full "cycle" through the list now takes one
    retry, so every reconnect pauses as the retry policy says, where kombu paused only after
    as many retries as there are Sentinels (Celery's task_publish_retry_policy gave a third)."""
    state = cast(Any, client)
    state.cycle = None
    state.completes_cycle = lambda retries: True
