"""A fact of plain Celery that the README's "Redis restarts" section rests on, against a real
Redis on loopback: Celery's Redis result consumer, reconnecting after an error on its pub/sub
connection, reads the stored results of the tasks it waits for and only then subscribes again,
so a result stored between the two is never announced, and get() waits out its timeout for a
task that is done. A Celery release that changes this fails here: then update the README and
outcome() in molecule/default/tests/test_safe_deploys.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, cast
from urllib.parse import quote

import celery.exceptions
import pytest
from celery import Celery, states
from celery.backends.redis import RedisBackend
from celery.result import AsyncResult

from testkit.loopback import RedisServer

TASK_ID = "stored-while-reconnecting"


@pytest.fixture
def app(redis_server: RedisServer) -> Iterator[Celery]:
    url = f"redis://:{quote(redis_server.password, safe='')}@127.0.0.1:{redis_server.port}/7"
    app = Celery("plain-producer", broker=url, backend=url)
    yield app
    backend = cast(RedisBackend, app.backend)
    backend.client.delete(backend.get_key_for_task(TASK_ID))
    app.close()


def test_a_result_stored_while_the_result_consumer_reconnects_is_never_announced(
    app: Celery, redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = cast(RedisBackend, app.backend)
    result: AsyncResult[str] = AsyncResult(TASK_ID, app=app)
    consumer = backend.result_consumer  # type: ignore[attr-defined]  # set by its __init__
    consumer.consume_from(TASK_ID)  # what send_task does before it publishes
    # The pub/sub connection breaks, as at a Redis restart.
    admin = redis_server.client(password=redis_server.password)
    assert admin.client_kill_filter(_type="pubsub") == 1

    # A worker stores the result right after the consumer has read the stored results.
    read_stored = backend.client.mget

    def read_then_the_worker_stores(*args: Any, **kwargs: Any) -> Any:  # noqa: ANN401
        stored = read_stored(*args, **kwargs)
        backend.store_result(TASK_ID, "done", states.SUCCESS)
        return stored

    monkeypatch.setattr(backend.client, "mget", read_then_the_worker_stores)

    with pytest.raises(celery.exceptions.TimeoutError):
        result.get(timeout=3)
    # The result was there all along: one read of the store finds it.
    assert AsyncResult(TASK_ID, app=app).state == states.SUCCESS
    consumer.cancel_for(TASK_ID)
