"""Controller-side checks: a task round trip through broker, worker and result backend."""

import sys
import time
from dataclasses import dataclass
from typing import Any, TextIO

from celery.result import AsyncResult

from taskapp.app import app
from taskapp.tasks import ping, process_data

_POLL_SECONDS = 0.02


@dataclass(frozen=True)
class _Sent:
    name: str
    result: AsyncResult[Any]
    expected: object
    sent_at: float


def smoke_inputs(count: int) -> list[list[float]]:
    """Distinct, deterministic inputs, so a worker running other code shows as a mismatch."""
    return [[(j - i) * 0.5 for j in range(i + 2)] for i in range(count)]


def run_smoke(
    count: int, timeout: float, queue: str | None = None, out: TextIO | None = None
) -> bool:
    """Send a ping and count process_data tasks, print one line each; True if all passed."""
    out = out or sys.stdout
    queue = queue or app.conf.task_default_queue
    sent = [_Sent("taskapp.ping", ping.apply_async(queue=queue), "pong", time.monotonic())]
    for data in smoke_inputs(count):
        result = process_data.apply_async(args=(data,), queue=queue)
        sent.append(_Sent("taskapp.process_data", result, process_data.run(data), time.monotonic()))
    elapsed_ms = _wait(sent, time.monotonic() + timeout)
    passed = sum(_report(s, elapsed_ms.get(s.result.id), out) for s in sent)
    print(f"smoke: {passed} passed, {len(sent) - passed} failed", file=out)
    return passed == len(sent)


def _wait(sent: list[_Sent], deadline: float) -> dict[str, float]:
    # Polling every task, rather than waiting on each in turn, keeps each round trip honest.
    elapsed_ms: dict[str, float] = {}
    pending = list(sent)
    while pending and time.monotonic() < deadline:
        for s in [s for s in pending if s.result.ready()]:
            elapsed_ms[s.result.id] = (time.monotonic() - s.sent_at) * 1000
            pending.remove(s)
        if pending:
            time.sleep(_POLL_SECONDS)
    return elapsed_ms


def _report(s: _Sent, elapsed_ms: float | None, out: TextIO) -> bool:
    result = s.result
    if elapsed_ms is None:
        state, summary, ok = f"TIMEOUT({result.state})", "no result in time", False
    elif result.successful():
        ok = result.result == s.expected
        state = result.state if ok else "MISMATCH"
        summary = _summary(result.result) if ok else f"got {result.result!r}, want {s.expected!r}"
    else:
        state, summary, ok = result.state, repr(result.result), False
    rtt = "-" if elapsed_ms is None else f"{elapsed_ms:.1f}ms"
    # Worker in the fourth column, whole: scripts split these lines on whitespace.
    print(f"{s.name} {result.id} {state} {result.worker or '-'} {summary} {rtt}", file=out)
    return ok


def _summary(value: object) -> str:
    if isinstance(value, dict):
        return " ".join(f"{k}={value[k]}" for k in ("count", "sum", "mean") if k in value)
    return str(value)


def ping_workers(timeout: float, out: TextIO | None = None) -> bool:
    """Print the name of every worker answering a control ping; True if any did."""
    out = out or sys.stdout
    replies = app.control.ping(timeout=timeout) or []
    names = sorted(name for reply in replies for name in reply)
    for name in names:
        print(name, file=out)
    if not names:
        print(f"no worker answered within {timeout}s", file=out)
    return bool(names)
