"""kombu's Redis transport, with a fetch that records a message before it leaves its queue.

kombu takes a message with BRPOP and records it as unacknowledged in a second command. A message
popped for a worker that never reads the reply (its network was cut while it waited), or whose
record fails (a stale pooled connection), is in neither place: lost (RELIABILITY.md, network cut).

Here a consumer instead runs FETCH, a server-side script that writes the message into kombu's
`unacked` hash and `unacked_index` and takes it off its queue in one step. A reply that never
arrives then leaves the message where kombu's own restore finds it: after the visibility timeout it
goes back to its queue. Everything else is kombu's: acks, rejects, restores, fanout, priorities.

A script cannot block, so an idle consumer waits with BRPOP on a per-queue wake list instead;
every publish pushes a token there. A lost token costs nothing but time: the wait ends after the
transport's BRPOP timeout (1 s) and the consumer fetches anyway. Messages published by plain kombu
(no token) are therefore fetched within that second too.

Selected with Celery's broker_transport setting (rcbundle.config); the URL stays redis:// or
rediss://. Producers and workers must both use it for the wake-ups, and workers for the safety.
"""

from collections.abc import Callable
from queue import Empty
from time import monotonic, time
from typing import Any, cast

from rcbundle import versions

versions.check()  # below kombu's public API: refuse an untested kombu

from kombu import Message  # noqa: E402
from kombu.transport import redis as kombu_redis  # noqa: E402
from kombu.transport import virtual  # noqa: E402
from kombu.utils.encoding import bytes_to_str  # noqa: E402
from kombu.utils.json import dumps, loads  # noqa: E402

# KEYS: n queue keys (in consuming order), unacked, unacked_index, then the queues' wake lists.
# ARGV: now, n, then per queue key "1" (record it: a consumer that acknowledges) or "0" (no_ack).
# The record is written before the message is removed, and allow-oom lets it be written on a full
# noeviction server, where taking the message and then failing to record it would lose it.
FETCH = """#!lua flags=allow-oom
local n = tonumber(ARGV[2])
for i = 1, n do
  local item = redis.call('LINDEX', KEYS[i], -1)
  if item then
    if ARGV[i + 2] == '1' then
      local ok, message = pcall(cjson.decode, item)
      local props = ok and type(message) == 'table' and message['properties']
      if type(props) == 'table' and type(props['delivery_tag']) == 'string'
          and type(props['delivery_info']) == 'table' then
        local info = props['delivery_info']
        local entry = '[' .. item .. ',' .. cjson.encode(info['exchange'] or '') .. ','
          .. cjson.encode(info['routing_key'] or '') .. ']'
        redis.call('HSET', KEYS[n + 1], props['delivery_tag'], entry)
        redis.call('ZADD', KEYS[n + 2], ARGV[1], props['delivery_tag'])
      end
    end
    redis.call('RPOP', KEYS[i])
    return {i, item}
  end
end
-- Every queue is empty: tokens left behind (a backlog drained without waiting) are stale.
for i = n + 3, #KEYS do
  redis.call('DEL', KEYS[i])
end
return false
"""

WAKE_SUFFIX = "wake"
# A wake list nobody consumes (only plain kombu workers) disappears this long after its last token.
WAKE_TTL_MS = 60_000

_FETCH = "fetch"
_WAIT = "wait"


class QoS(kombu_redis.QoS):
    def append(self, message: Message, delivery_tag: str) -> None:
        fetched = cast("Channel", self.channel).fetched_tags
        if delivery_tag in fetched:
            # FETCH already recorded it in Redis; only the in-process bookkeeping is left.
            fetched.discard(delivery_tag)
            virtual.QoS.append(self, message, delivery_tag)
        else:  # basic_get, kombu's own path
            super().append(message, delivery_tag)


class Channel(kombu_redis.Channel):
    QoS = QoS

    # kombu's own, which its type stubs (celery-types) leave out.
    _closing: bool
    _expires: dict[str, int]
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
        super().__init__(*args, **kwargs)

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
        tag: str = super().basic_consume(queue, no_ack, callback, consumer_tag, **kwargs)
        return tag

    def _put(self, queue: str, message: dict[str, Any], **kwargs: object) -> None:
        batch: Any = kwargs.pop("_publish_batch", None)
        key = self._q_for_pri(queue, self._get_message_priority(message, reverse=False))
        wake = self.wake_key(queue)
        commands: list[tuple[str, tuple[Any, ...]]] = [
            ("lpush", (key, dumps(message))),
            ("lpush", (wake, "1")),
            ("pexpire", (wake, WAKE_TTL_MS)),
        ]
        if self._expires and queue in self._expires:
            commands += [
                ("pexpire", (self._q_for_pri(queue, pri), self._expires[queue]))
                for pri in self.priority_steps
            ]
        if batch is not None:
            for name, args in commands:
                batch.add(name, *args)
            return
        # One round trip, not a transaction: the message goes first, and a lost token only delays.
        with self.conn_or_acquire() as client, client.pipeline(transaction=False) as pipe:
            for name, args in commands:
                getattr(pipe, name)(*args)
            replies = pipe.execute(raise_on_error=False)
        # A token refused (the message just filled a noeviction broker) must not report an
        # accepted message as refused: the producer could send it again.
        for (_, args), reply in zip(commands, replies, strict=True):
            if isinstance(reply, Exception) and args[0] != wake:
                raise reply

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
        keys = [key for key, _ in self._poll_keys] + [self.unacked_key, self.unacked_index_key]
        keys += [self.wake_key(queue) for queue in self._poll_queues]
        record = ["0" if queue in self._noack_queues else "1" for _, queue in self._poll_keys]
        now = f"{time():.6f}"
        self._send(
            _FETCH, "EVAL", FETCH, len(keys), *[prefix + key for key in keys],
            now, len(self._poll_keys), *record,
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
                self.fetched_tags.add(message["properties"]["delivery_tag"])
            self.connection._deliver(message, queue)
            return True
        if state == _FETCH and not self._closing and self.qos.can_consume():
            self._send_wait()  # every queue empty
        else:
            # A token, or the wait timed out: the next poll fetches again, from the queues
            # consumed by then (a consumer added or cancelled meanwhile counts).
            self._end_poll()
        raise Empty()


class Transport(kombu_redis.Transport):
    Channel = Channel
