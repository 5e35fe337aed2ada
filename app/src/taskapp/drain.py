"""`python -m taskapp drain NAME@HOST`: stop a worker consuming, wait for its tasks to end."""

import sys
import time
from typing import Any, TextIO

from taskapp.app import app

_REPLY_SECONDS = 5.0
_POLL_SECONDS = 1.0


def drain(worker: str, timeout: float, out: TextIO | None = None) -> bool:
    """Cancel every queue worker consumes, wait until it runs and holds no task; True if it did.

    The worker keeps running (a stop is then instant and loses nothing); its queues' other
    consumers take the new tasks.
    """
    out = out or sys.stdout
    queues = _ask(worker, "active_queues")
    if queues is None:
        print(f"{worker}: no answer; nothing to drain", file=out)
        return True
    names = sorted(q["name"] for q in queues)
    for name in names:
        app.control.cancel_consumer(name, destination=[worker], reply=True, timeout=_REPLY_SECONDS)
    print(f"{worker}: stopped consuming {', '.join(names) or 'nothing'}", file=out)
    deadline = time.monotonic() + timeout
    while True:
        # Reserved (prefetched) tasks run too once consuming stops: wait for both.
        running = (_ask(worker, "active") or []) + (_ask(worker, "reserved") or [])
        if not running:
            print(f"{worker}: drained, no task running", file=out)
            return True
        if time.monotonic() >= deadline:
            ids = ", ".join(str(t.get("id")) for t in running)
            print(
                f"{worker}: still running {len(running)} task(s) after {timeout}s: {ids}", file=out
            )
            return False
        time.sleep(_POLL_SECONDS)


def _ask(worker: str, method: str) -> list[dict[str, Any]] | None:
    inspect = app.control.inspect(destination=[worker], timeout=_REPLY_SECONDS)
    replies: dict[str, list[dict[str, Any]]] | None = getattr(inspect, method)()
    if not replies or worker not in replies:
        return None
    return list(replies[worker])
