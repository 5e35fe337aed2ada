"""rcbundle.transport without a server: the keyspace subscriber's test of a silent connection."""

from time import monotonic
from types import SimpleNamespace
from typing import cast

import pytest
import redis
from redis.client import PubSub

from rcbundle import transport


def _pubsub(interval: float, next_check: float) -> PubSub:
    connection = SimpleNamespace(health_check_interval=interval, next_health_check=next_check)
    return cast(PubSub, SimpleNamespace(connection=connection))


def test_a_subscriber_connection_silent_for_two_health_check_intervals_is_dropped() -> None:
    # redis-py sets next_health_check one interval after the last read: PINGed since, unanswered.
    with pytest.raises(redis.ConnectionError, match="answered no PING for 10 s"):
        transport._check_alive(_pubsub(10, monotonic() - 10.5))


@pytest.mark.parametrize(
    ("interval", "due_in"),
    [(10, -9), (10, 5), (0, None), (10, None)],
    ids=["ping-pending", "read-lately", "no-health-checks", "never-read"],
)
def test_a_subscriber_connection_read_lately_or_unchecked_is_kept(
    interval: float, due_in: float | None
) -> None:
    # due_in: seconds from now to next_health_check; None: redis-py's 0 (nothing read yet).
    transport._check_alive(_pubsub(interval, 0 if due_in is None else monotonic() + due_in))


def test_no_connection_yet_is_kept() -> None:
    transport._check_alive(cast(PubSub, SimpleNamespace(connection=None)))
