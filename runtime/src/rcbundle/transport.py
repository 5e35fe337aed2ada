"""kombu's Redis transport, with a fetch that records a message before it leaves its queue.

Fetch. kombu takes a message with BRPOP and records it as unacknowledged in a second command. A
message popped for a worker that never reads the reply (its network was cut while it waited), or
whose record fails (a stale pooled connection), is in neither place: lost (RELIABILITY.md, network
cut). Here a consumer instead runs FETCH, a server-side script that writes the message into
kombu's `unacked` hash and `unacked_index` and takes it off its queue in one step. A reply that
never arrives then leaves the message where kombu's own restore finds it: after the visibility
timeout it goes back to its queue. Everything else is kombu's: publishing, acks, rejects,
restores, fanout, priorities. A no_ack consumer (a reply queue) is fetched without a record.

Wake-ups. A script cannot block, so an idle consumer waits with BRPOP on a per-queue wake list
(`<queue>\\x06\\x16wake`). Producers do nothing special: any producer (this transport, plain
kombu or Celery, `celery call`, Flower) publishes with kombu's LPUSH. The broker runs with
`notify-keyspace-events` containing K and l, so every LPUSH/RPUSH onto a queue key is announced
on `__keyspace@<db>__:<key>`. Each consuming channel has a subscriber (KeyspaceWaker: a daemon
thread with its own redis-py PubSub on the channel's connection pool, so TLS, the ACL user and
Sentinel's master discovery are the channel's) that SUBSCRIBEs to exactly those channels for the
queue keys it consumes (every queue x kombu priority step) and, on an `lpush` or `rpush` event,
pushes a token onto that queue's wake list, which ends the waiting BRPOP at once. Without
notifications (not enabled on the server, subscriber reconnecting) nothing is lost: the BRPOP
times out after the transport's polling_interval (kombu's brpop_timeout, 1 s by default) and the
consumer fetches anyway.

Why no wake-up is lost. FETCH deletes a queue's tokens only when it finds every queue empty, in
the same atomic script. A message pushed after that FETCH is announced after it, so its token is
written after the deletion and waits in the list for the BRPOP that follows (or ends it, if it is
already waiting). A message pushed before that FETCH is taken by it. A message pushed while the
subscriber was not yet subscribed (start, a consumer added, a reconnect) has no notification, so
each subscription the server confirms pushes a token too: the next wait ends at once and the
consumer fetches what came in meanwhile. A token nobody needed costs one empty FETCH; so does
each message for every idle consumer of its queue but the one that takes it (each subscriber
pushes a token).

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

Sentinel. The same behaviour over Sentinel: SentinelTransport (URL `sentinel://...`, option
`master_name`). The subscriber's connections come from the Sentinel-managed pool, and it also
re-checks the master's address every health_check_interval, moving to a new master.

Fork safety. A forked child inherits no running subscriber (threads do not survive fork); an
os.register_at_fork hook gives each subscriber fresh state there without touching the parent's
socket, and the child never restores owned messages.

Selected with Celery's broker_transport setting (rcbundle.config); the URL stays redis://,
rediss:// (or sentinel:// with SentinelTransport). Workers must use it for the safety; producers
may use anything that speaks kombu. kombu's ack_emulation=False is not supported.

kombu and redis-py internals relied on (rcbundle.versions refuses other kombu/Celery series):
- kombu.transport.redis.Channel: _brpop_start, _brpop_read, _in_poll, _brpop_sent_at (the poll
  protocol of its MultiChannelPoller), _flush_brpop_reauth, _queue_cycle (consume, rotate),
  _update_queue_cycle (called by basic_consume and _basic_cancel when the consumed queues
  change), _q_for_pri, priority_steps, active_queues, _purge, _delete, _closing,
  connection_errors, client (its .connection and parse_response), pool (its connection_kwargs),
  conn_or_acquire, global_keyprefix, sep, unacked_key, unacked_index_key, brpop_timeout,
  health_check_interval, from_transport_options, QoS, qos, connection._deliver; close, whose
  disconnect of the pool (in-use connections too) also ends the subscriber's wait at once.
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
- redis-py: Connection._sock (whether a fetch's reply can still arrive on it), PubSub (subscribe,
  unsubscribe, get_message, close, its connection: PINGs it when
  idle for health_check_interval; next_health_check is when the next is due), Connection
  host/port, SentinelConnectionPool.get_master_address, ConnectionPool.connection_kwargs["db"],
  and its fork check (a pool used in a forked child starts afresh).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import weakref
from collections.abc import Callable, Iterable, Mapping
from queue import Empty
from time import monotonic, time
from typing import TYPE_CHECKING, Any, cast

from rcbundle import versions
from rcbundle.config import OWNER_OPTION, SOCKET_TIMEOUT

versions.check()  # below kombu's public API: refuse an untested kombu

import redis  # noqa: E402
from kombu import Message  # noqa: E402
from kombu.transport import redis as kombu_redis  # noqa: E402
from kombu.transport import virtual  # noqa: E402
from kombu.utils.encoding import bytes_to_str  # noqa: E402
from kombu.utils.json import loads  # noqa: E402
from kombu.utils.objects import cached_property  # noqa: E402
from redis.client import Pipeline, PubSub  # noqa: E402
from redis.sentinel import SentinelConnectionPool  # noqa: E402

logger = logging.getLogger(__name__)

# KEYS: n queue keys (in consuming order), unacked, unacked_index, unacked_owner, then the queues'
# wake lists. ARGV: now, n, owner ("" = none), then per queue key "1" (record it: a consumer that
# acknowledges) or "0" (no_ack). The record is written before the message is removed, and
# allow-oom lets it be written on a full noeviction server, where taking the message and then
# failing to record it would lose it.
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
-- Every queue is empty: tokens left behind (a backlog drained without waiting) are stale.
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

WAKE_SUFFIX = "wake"
# A wake list nobody consumes any more disappears this long after its last token.
WAKE_TTL_MS = 60_000
# Every idle consumer's subscriber pushes a token per message, and busy consumers pop none: left
# unbounded, a burst onto a queue with many consumers would fill a noeviction broker with tokens.
# A token pushed while a consumer waits is popped at once (Redis serves a blocked BRPOP right
# after the LPUSH, before the trim), so the cap only bounds tokens nobody waits for: enough to
# wake this many consumers that start waiting later; any others fetch at their next poll.
WAKE_TOKENS_MAX = 100
OWNER_SUFFIX = "_owner"  # the owner hash is kombu's unacked_key + this: "unacked_owner"
OPTIONS = (OWNER_OPTION,)

# The keyspace events that put a message on a queue: kombu's publish (LPUSH), restore (RPUSH, or
# LPUSH for a requeued reject).
PUSH_EVENTS = frozenset({b"lpush", b"rpush"})
# The subscriber looks for a changed set of queues and a stop this often (and for a moved master
# every health_check_interval).
TICK_SECONDS = 0.5
BACKOFF_SECONDS = (0.1, 5.0)  # first and longest pause between reconnects
JOIN_SECONDS = 2.0
STALE_BATCH = 500
# How long after its fetch a message that this process does not hold is given back (the sweep
# in ReliableFetch._restore_unheld): twice the poll connection's socket timeout.
UNHELD_AFTER = 2 * SOCKET_TIMEOUT

_FETCH = "fetch"
_WAIT = "wait"

# Owners whose messages this process has restored; a forked child restores none.
_restored_owners: set[str] = set()
# Per owner, the delivery tags this process received and has not yet acked, rejected or restored.
_held: dict[str, set[str]] = {}
# The channels of this process that consume with an owner.
_consuming: weakref.WeakSet[ReliableFetch] = weakref.WeakSet()
_forked = False
_wakers: weakref.WeakSet[KeyspaceWaker] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    global _forked
    _forked = True
    for waker in list(_wakers):
        waker.after_fork_in_child()


os.register_at_fork(after_in_child=_after_fork_in_child)


class KeyspaceWaker:
    """Pushes a wake token when a watched queue key gets a message (see the module docstring).

    One per consuming channel. watch() names the keyspace channels and the wake list each one
    wakes; a daemon thread keeps a PubSub subscribed to exactly those and pushes the tokens. It
    reconnects with backoff on errors, and ends on stop() (the channel's close, or the channel
    garbage-collected) or once nothing is watched. All pub/sub I/O is in that thread.
    """

    def __init__(self, pool: redis.ConnectionPool, health_check_interval: float) -> None:
        self._pool = pool
        self._health_check_interval = health_check_interval
        self._wanted: dict[bytes, str] = {}  # replaced whole: the thread reads it without a lock
        self._lock = threading.Lock()  # whether a thread runs: watch() against _retire()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pause = BACKOFF_SECONDS[0]
        _wakers.add(self)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def watch(self, wanted: Mapping[bytes, str]) -> None:
        """Subscribe to exactly these channels (keyspace channel -> prefixed wake list)."""
        with self._lock:
            self._wanted = dict(wanted)
            if self._wanted and not self.running and not self._stop.is_set():
                self._thread = threading.Thread(
                    target=self._run, name="rcbundle-keyspace-waker", daemon=True
                )
                self._thread.start()

    def _retire(self) -> bool:
        """In the thread: end it if nothing is watched (a later watch() starts another)."""
        with self._lock:
            if self._wanted and not self._stop.is_set():
                return False
            self._thread = None
            return True

    def stop(self) -> None:
        self._stop.set()

    def join(self, timeout: float) -> None:
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def after_fork_in_child(self) -> None:
        # The thread did not survive the fork, and its locks may have been held when it
        # happened: fresh state, and the parent's socket left alone (the child must not shut down
        # the parent's connection).
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = None
        self._wanted = {}

    def _run(self) -> None:
        stop = self._stop
        self._pause = BACKOFF_SECONDS[0]
        while not self._retire():
            pubsub = PubSub(self._pool)
            try:
                self._listen(pubsub, stop)
            except _MasterMoved as moved:
                logger.info("rcbundle.transport: keyspace subscriber follows %s", moved)
            except Exception as exc:  # the connection, or the pool closed under it at close
                if not stop.is_set():
                    logger.warning(
                        "rcbundle.transport: keyspace subscriber lost its connection (%s: %s); "
                        "consumers wait up to the polling interval until it is back in %.1f s",
                        type(exc).__name__,
                        exc,
                        self._pause,
                    )
                    stop.wait(self._pause)
                    self._pause = min(self._pause * 2, BACKOFF_SECONDS[1])
            finally:
                with contextlib.suppress(Exception):
                    pubsub.close()

    def _listen(self, pubsub: PubSub, stop: threading.Event) -> None:
        """Until stopped or nothing is watched; raises on connection errors."""
        subscribed: set[bytes] = set()
        master_checked = monotonic()
        while not stop.is_set() and self._wanted:
            wanted = self._wanted
            gone = subscribed - wanted.keys()
            if gone:
                cast(Any, pubsub).unsubscribe(*gone)  # untyped in redis-py
                subscribed -= gone
            new = wanted.keys() - subscribed
            if new:
                pubsub.subscribe(*new)
                subscribed |= new
            _check_alive(pubsub)
            if self._health_check_interval and (
                monotonic() - master_checked >= self._health_check_interval
            ):
                master_checked = monotonic()
                self._check_master(pubsub)
            wakes: set[str] = set()
            message = pubsub.get_message(timeout=TICK_SECONDS)
            while message is not None:
                wake = self._wake_for(message)
                if wake is not None:
                    wakes.add(wake)
                message = pubsub.get_message(timeout=0)
            if wakes:
                self._push(wakes)

    def _wake_for(self, message: Mapping[str, Any]) -> str | None:
        wake = self._wanted.get(message["channel"])
        if wake is None:
            return None
        if message["type"] == "subscribe":
            # A confirmed subscription wakes too: messages pushed before it went unannounced.
            self._pause = BACKOFF_SECONDS[0]  # connected again
            return wake
        if message["type"] == "message" and message["data"] in PUSH_EVENTS:
            return wake
        return None

    def _check_master(self, pubsub: PubSub) -> None:
        pool = self._pool
        connection = pubsub.connection
        if not isinstance(pool, SentinelConnectionPool) or connection is None:
            return
        try:
            address = pool.get_master_address()
        except redis.RedisError:  # no Sentinel answers now: the master we have may well be it
            return
        if (connection.host, connection.port) != tuple(address):
            raise _MasterMoved(f"the master, now at {address[0]}:{address[1]}")

    def _push(self, wakes: Iterable[str]) -> None:
        client = redis.Redis(connection_pool=self._pool)
        with client.pipeline(transaction=False) as pipe:
            for wake in sorted(wakes):
                pipe.lpush(wake, "1")
                pipe.ltrim(wake, 0, WAKE_TOKENS_MAX - 1)
                pipe.pexpire(wake, WAKE_TTL_MS)
            # A refused token (a full noeviction broker) only delays: the wait times out.
            pipe.execute(raise_on_error=False)


def _check_alive(pubsub: PubSub) -> None:
    # redis-py PINGs a connection that has read nothing for health_check_interval, but a
    # half-open one never answers and never fails: nothing read for two intervals is dead.
    connection = pubsub.connection
    interval = getattr(connection, "health_check_interval", 0)
    last_due = getattr(connection, "next_health_check", 0)
    if interval and last_due and monotonic() > last_due + interval:
        raise redis.ConnectionError(
            f"the keyspace subscriber's connection answered no PING for {interval} s"
        )


class _MasterMoved(Exception):
    """Sentinel names another master than the one the subscriber is connected to."""


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
        self._poll_queues: list[str] = []
        self._poll_keys: list[tuple[str, str]] = []
        self._waker: KeyspaceWaker | None = None
        super().__init__(*args, **kwargs)

    @property
    def owner(self) -> str:
        return str(self.rcbundle_owner or "")

    @property
    def unacked_owner_key(self) -> str:
        return self.unacked_key + OWNER_SUFFIX

    def wake_key(self, queue: str) -> str:
        return f"{queue}{self.sep}{WAKE_SUFFIX}"

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
        wanted = self._keyspace_channels()
        if self._waker is None:
            if not wanted:
                return
            self._waker = KeyspaceWaker(self.pool, float(self.health_check_interval or 0))
            # A channel nobody closes (Celery's app.close() only drops its pool) stops it too.
            weakref.finalize(self, self._waker.stop)
        self._waker.watch(wanted)

    def _keyspace_channels(self) -> dict[bytes, str]:
        db = self.pool.connection_kwargs.get("db", 0)
        prefix = self.global_keyprefix
        return {
            f"__keyspace@{db}__:{prefix}{self._q_for_pri(queue, pri)}".encode(): prefix
            + self.wake_key(queue)
            for queue in self.active_queues
            for pri in self.priority_steps
        }

    def close(self) -> None:
        waker = self._waker
        if waker is not None:
            waker.stop()  # before kombu closes the pool under its connection
        super().close()
        if waker is not None:
            waker.join(JOIN_SECONDS)

    def _purge(self, queue: str) -> int:
        size: int = super()._purge(queue)
        with self.conn_or_acquire() as client:
            client.delete(self.wake_key(queue))
        return size

    def _delete(self, queue: str, *args: object, **kwargs: object) -> None:
        super()._delete(queue, *args, **kwargs)
        with self.conn_or_acquire(client=kwargs.get("client")) as client:
            client.delete(self.wake_key(queue))

    # A poll runs FETCH on the poll connection; when every queue is empty, it goes on to BRPOP on
    # the wake lists until a token or the timeout. kombu's poller then starts the next poll.

    def _brpop_start(self, timeout: float | None = None) -> None:
        queues = self._queue_cycle.consume(len(self.active_queues))
        if not queues:
            return
        self._poll_queues = list(queues)
        self._poll_keys = [
            (self._q_for_pri(queue, pri), queue) for pri in self.priority_steps for queue in queues
        ]
        self._send_fetch()

    def _send(self, state: str, *command: object) -> None:
        # Keys are prefixed here: kombu's prefixing client knows BRPOP, but prefixes only EVALSHA's
        # first key and not EVAL's at all.
        self._poll_state = state
        self._in_poll = self.client.connection
        self._brpop_sent_at = monotonic()
        self.client.connection.send_command(*command)

    def _send_fetch(self) -> None:
        prefix = self.global_keyprefix
        keys = [key for key, _ in self._poll_keys]
        keys += [self.unacked_key, self.unacked_index_key, self.unacked_owner_key]
        keys += [self.wake_key(queue) for queue in self._poll_queues]
        record = ["0" if queue in self._noack_queues else "1" for _, queue in self._poll_keys]
        now = f"{time():.6f}"
        self._send(
            _FETCH, "EVAL", FETCH, len(keys), *[prefix + key for key in keys],
            now, len(self._poll_keys), self.owner, *record,
        )  # fmt: skip

    def _send_wait(self) -> None:
        wakes = [self.global_keyprefix + self.wake_key(queue) for queue in self._poll_queues]
        self._send(_WAIT, "BRPOP", *wakes, self.brpop_timeout or 1)

    def _end_poll(self) -> None:
        self._poll_state = None
        self._in_poll = None
        # The connection is idle now: kombu's moment to send a pending re-auth token.
        self._flush_brpop_reauth()

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
            index, item = reply
            _, queue = self._poll_keys[int(index) - 1]
            self._queue_cycle.rotate(queue)
            message = loads(bytes_to_str(item))
            if queue not in self._noack_queues:
                tag = message["properties"]["delivery_tag"]
                self.fetched_tags.add(tag)
                if self.owner:
                    _held.setdefault(self.owner, set()).add(tag)
            self.connection._deliver(message, queue)
            return True
        if state == _FETCH and not self._closing and self.qos.can_consume():
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


class PollWithoutSleep(_TransportBase):
    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        # kombu has made the polling_interval option the BRPOP timeout (brpop_timeout). Its
        # drain_events would also sleep that long after each poll that delivers nothing, and a
        # poll here ends so after every wait (an empty fetch, a token): the wait is the pause.
        self.polling_interval = None  # kombu redis transport's own default


class Transport(PollWithoutSleep, kombu_redis.Transport):
    Channel = Channel


class SentinelTransport(PollWithoutSleep, kombu_redis.SentinelTransport):
    Channel = SentinelChannel
