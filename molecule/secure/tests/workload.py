"""The task workload the ACL must allow: tasks, a retry, a chord, a countdown, inspect ping.

Run as a script with RCBUNDLE_CONFIG pointing at a config for the Celery user.
"""

from __future__ import annotations

import sys
import time

from celery import chord

from rcbundle import configure
from taskapp.app import app
from taskapp.tasks import fetch_url, ping, process_data

configure(app)  # the one line a producer adds: reads $RCBUNDLE_CONFIG

QUEUE = "celery"
TIMEOUT = 60


def main() -> int:
    assert ping.apply_async(queue=QUEUE).get(timeout=TIMEOUT) == "pong"
    results = [process_data.apply_async(args=([i, i + 0.5],), queue=QUEUE) for i in range(10)]
    for result in results:
        assert result.get(timeout=TIMEOUT)["count"] == 2
    header = [process_data.s([i, 2.0]).set(queue=QUEUE) for i in range(4)]
    assert chord(header)(ping.si().set(queue=QUEUE)).get(timeout=TIMEOUT) == "pong"
    assert ping.apply_async(countdown=2, queue=QUEUE).get(timeout=TIMEOUT) == "pong"
    # A refused connection is retried by the task (autoretry_for network errors).
    retried = fetch_url.apply_async(args=("http://127.0.0.1:9/",), queue=QUEUE)
    deadline = time.monotonic() + TIMEOUT
    while retried.state != "RETRY" and time.monotonic() < deadline:
        time.sleep(0.2)
    assert retried.state == "RETRY", retried.state
    retried.revoke()
    replies = app.control.inspect(timeout=5).ping()
    assert replies, "no worker answered inspect ping"
    print("workload passed:", sorted(replies))
    return 0


if __name__ == "__main__":
    sys.exit(main())
