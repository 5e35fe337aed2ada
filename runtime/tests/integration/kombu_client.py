"""kombu clients of the loopback servers, shared by the transport tests (plain and Sentinel)."""

import select
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from urllib.parse import quote

import redis
from kombu import Connection, Consumer, Exchange, Message, Producer, Queue
from kombu.transport.redis import Channel as KombuChannel

from testkit.loopback import RedisServer

PREFIX = "brokertest:"
DB = 3  # apart from the session worker's databases
RELIABLE = "rcbundle.transport:Transport"
STOCK = "kombu.transport.redis:Transport"
# A BRPOP timeout no test waits for: a message that arrives sooner was woken by a notification
# (the tests allow 3 s for that). A connection closed while its BRPOP is outstanding waits for
# it to end, so each test that closes an idle consumer costs up to this much.
LONG_POLL = 10


def redis_url(server: RedisServer, db: int = DB) -> str:
    return f"redis://:{quote(server.password, safe='')}@127.0.0.1:{server.port}/{db}"


def connect(url: str, transport: str, **options: object) -> Connection:
    return Connection(
        url, transport=transport, transport_options={"global_keyprefix": PREFIX, **options}
    )


def queue(name: str) -> Queue:
    return Queue(name, Exchange(name, type="direct"), routing_key=name)


def publish(conn: Connection, to: Queue, body: str) -> None:
    Producer(conn.channel()).publish(body, exchange=to.exchange, routing_key=to.routing_key,
                                     declare=[to], serializer="json")  # fmt: skip


def keep(into: list[Message]) -> Callable[[object, Message], None]:
    def callback(body: object, message: Message) -> None:
        into.append(message)

    return callback


def keyspace_channel(key: str, db: int = DB) -> str:
    return f"__keyspace@{db}__:{PREFIX}{key}"


def subscribers(admin: redis.Redis, key: str, db: int = DB) -> int:
    channel = keyspace_channel(key, db)
    counts = dict(admin.pubsub_numsub(channel))
    return int(counts.get(channel, 0))


def wait_for(what: str, ready: Callable[[], bool], seconds: float = 5) -> None:
    deadline = time.monotonic() + seconds
    while not ready():
        assert time.monotonic() < deadline, f"not within {seconds} s: {what}"
        time.sleep(0.01)


def cut_while_fetching(conn: Connection, of: Queue, admin: redis.Redis) -> KombuChannel:
    """Start a consumer's poll, let Redis answer it, and drop the answer with the connection."""
    channel = conn.default_channel
    assert isinstance(channel, KombuChannel)
    consumer = Consumer(channel, queues=[of], accept=["json"])
    consumer.consume()
    conn.transport.cycle.on_poll_start()  # type: ignore[attr-defined]  # sends the fetch (kombu: BRPOP) on the poll connection
    wait_for("the consumer's command took the message", lambda: not admin.llen(PREFIX + of.name))
    channel.client.connection.disconnect()  # the reply, unread, goes with it
    return channel


def wait_readable(channel: object, seconds: float = 5) -> None:
    """Until the reply to the channel's pending poll command has arrived (unread)."""
    assert isinstance(channel, KombuChannel)
    readable, _, _ = select.select([channel.client.connection._sock], [], [], seconds)
    assert readable, f"no reply to the poll within {seconds} s"


@contextmanager
def publish_later(url: str, to: Queue, body: str, delay: float, transport: str = STOCK,
                  **options: object) -> Iterator[list[float]]:  # fmt: skip
    """Publish from another thread, with its own connection, delay seconds from now.

    Yields a list that gets the monotonic time of the publish once it is done.
    """
    done: list[float] = []

    def run() -> None:
        time.sleep(delay)
        with connect(url, transport, **options) as conn:
            publish(conn, to, body)
        done.append(time.monotonic())

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield done
    finally:
        thread.join(10)


def receive_one(conn: Connection, of: Queue, seconds: float) -> tuple[Message, float]:
    """Consume of until one message arrives: the message and the monotonic time it came."""
    received: list[Message] = []
    with Consumer(conn, queues=[of], accept=["json"], callbacks=[keep(received)]):
        conn.drain_events(timeout=seconds)
    assert len(received) == 1
    return received[0], time.monotonic()
