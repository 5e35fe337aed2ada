"""Sends, by hand, a task message serialized with pickle whose payload runs a shell command.

Run as a script with RCBUNDLE_CONFIG pointing at a config for the Celery user; argv[1] is the file
the payload would create on the worker if the worker ever unpickled it.
"""

from __future__ import annotations

import os
import sys
import uuid

from rcbundle import configure
from taskapp.app import app

configure(app)  # the one line a producer adds: reads $RCBUNDLE_CONFIG


class Payload:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


def main() -> int:
    task_id = str(uuid.uuid4())
    headers = {"lang": "py", "task": "taskapp.ping", "id": task_id, "root_id": task_id}
    body = ((Payload(sys.argv[1]),), {}, {"callbacks": None, "errbacks": None, "chain": None})
    with app.connection_for_write() as conn:
        conn.Producer(serializer="pickle").publish(
            body, routing_key="celery", exchange="", headers=headers, delivery_mode=2
        )
    print("sent pickle message", task_id)
    return 0


if __name__ == "__main__":
    sys.exit(main())
