"""Celery's solo pool with the soft and hard time limits that the stock solo pool ignores.

The celery_worker role runs its `solo` nodes with this pool: the unit sets
CELERY_CUSTOM_WORKER_POOL=rcbundle.solo:TaskPool and passes `--pool custom`.
A solo node runs each task in its main thread, with no pool process to talk to,
which is why it consumes faster than a prefork node (BENCHMARKS.md). Because no
parent process watches the task, this pool arms SIGALRM around each task:

- at the soft limit it raises SoftTimeLimitExceeded in the task, as prefork does
  (and logs Celery's "Soft time limit exceeded" warning, as prefork does);
- at the hard limit it raises TimeLimitExceeded, and the task fails with it.
  Celery stores that failure and acknowledges it as it does a prefork hard time-out.
  Prefork kills its child instead; a solo node cannot kill its only process and carry on;
- a task that swallows both is still running HARD_EXIT_GRACE seconds later. The
  node then does what prefork's parent does for a child it killed: it calls Celery's
  Request.on_timeout (the pool's timeout_callback), which records the task as FAILED
  with TimeLimitExceeded and runs its failure hooks, and acknowledges the message at
  once (Celery would leave that to the event loop, which never runs again); then it
  exits with status 70. systemd restarts it; the message is not delivered again.
  (With task_acks_on_timeout off, Celery's choice is to requeue it instead, as under
  prefork.) Recording is bounded by RECORD_GRACE seconds (Redis unreachable): past
  that the node exits anyway, and the message comes back after the visibility timeout.

The limits cover the task, not Celery's bookkeeping around it: the alarm is off before
Celery stores the result and acknowledges the message. The pool marks where the task
body ends by wrapping each registered task's `run` when the worker starts the pool
(before its consumer builds the tracers that call `run`). A task registered later is
still limited, but its limits then also cover the storing of its result, never the
acknowledgement.

Blocking system calls are interrupted (PEP 475 re-raises from the handler). C code
that holds the GIL without checking for signals is not interrupted.
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import time
from collections.abc import Callable, Mapping, Sequence
from types import FrameType, TracebackType
from typing import Any, NoReturn

from rcbundle import versions

versions.check()

from celery.concurrency import solo  # noqa: E402
from celery.concurrency.base import apply_target  # noqa: E402
from celery.exceptions import SoftTimeLimitExceeded, TimeLimitExceeded  # noqa: E402

HARD_EXIT_GRACE = 5.0
# Above the Redis socket timeouts (rcbundle.config): storing the failure and the ack may each
# wait that long for a broker or result store that has gone away.
RECORD_GRACE = 40.0
EXIT_STATUS = 70  # EX_SOFTWARE

_SOFT, _HARD, _EXIT = "soft", "hard", "exit"
_BODY_MARK = "__rcbundle_solo_body__"


class _Alarm:
    """The limits of one task as a list of (seconds after start, what happens)."""

    def __init__(
        self,
        soft: float | None,
        hard: float | None,
        timeout_callback: Callable[..., object] | None = None,
        task_name: object = None,
    ) -> None:
        stages: list[tuple[float, str]] = []
        if soft:
            stages.append((float(soft), _SOFT))
        if hard:
            stages += [(float(hard), _HARD), (float(hard) + HARD_EXIT_GRACE, _EXIT)]
        self.stages = sorted(stages, key=lambda stage: stage[0])
        self.hard = hard
        self.timeout_callback = timeout_callback
        self.task_name = task_name
        self.in_body = False
        self.stopped = False
        self.started = time.monotonic()
        self._previous: Any = None

    def __enter__(self) -> _Alarm:
        global _current
        self.started = time.monotonic()
        self._previous = signal.signal(signal.SIGALRM, self.fire)
        _current = self
        self.arm()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        global _current
        self.stop()
        _current = None
        signal.signal(signal.SIGALRM, self._previous)

    def arm(self) -> None:
        if self.stages and not self.stopped:
            left = self.stages[0][0] - (time.monotonic() - self.started)
            signal.setitimer(signal.ITIMER_REAL, max(left, 0.001))

    def stop(self) -> None:
        """No limit from now on (idempotent). A signal already pending is ignored by fire()."""
        self.stopped = True
        signal.setitimer(signal.ITIMER_REAL, 0)

    def fire(self, signum: int, frame: FrameType | None) -> None:
        if self.stopped or not self.stages:
            return
        at, stage = self.stages.pop(0)
        self.arm()
        if stage == _EXIT:
            self.exit(at)
        if stage == _SOFT and self.timeout_callback is not None:
            # Celery's warning, which prefork's parent logs; a log line must not change the outcome.
            with contextlib.suppress(Exception):
                self.timeout_callback(soft=True, timeout=at)
        exc = SoftTimeLimitExceeded if stage == _SOFT else TimeLimitExceeded
        raise exc(f"{exc.__name__.removesuffix('Exceeded')} ({at:g}s) exceeded")

    def exit(self, at: float) -> NoReturn:
        """End a task that swallowed its limits: record it as failed, then end the node."""
        os.write(2, f"rcbundle.solo: task still running {at:g}s after start, "
                    "past its hard time limit; exiting\n".encode())  # fmt: skip
        if self.timeout_callback is not None:
            # Whatever recording meets (a lock, a dead connection), the node still ends.
            signal.signal(signal.SIGALRM, _exit_now)
            signal.setitimer(signal.ITIMER_REAL, RECORD_GRACE)
            try:
                self.timeout_callback(soft=False, timeout=self.hard)
                _settle(getattr(self.timeout_callback, "__self__", None))
            except BaseException as exc:  # the node exits whatever happened
                os.write(2, f"rcbundle.solo: could not record the time-out: {exc!r}\n".encode())
        os._exit(EXIT_STATUS)


def _settle(request: object) -> None:
    """Acknowledge (or requeue) the timed-out request's message now, as on_timeout decided.

    on_timeout acknowledges through a callback Celery defers to the worker's event loop, which
    never runs again in this process. The decision is Celery's documented one: with acks_late,
    acknowledge if task_acks_on_timeout (task_acks_on_failure_or_timeout), else requeue.
    """
    message = getattr(request, "message", None)
    task = getattr(request, "task", None)
    if message is None or task is None or message.acknowledged or not task.acks_late:
        return
    if task.acks_on_timeout:
        message.ack()
    else:
        message.reject(requeue=True)


def _exit_now(signum: int, frame: FrameType | None) -> NoReturn:
    os.write(2, b"rcbundle.solo: recording the time-out took too long; exiting\n")
    os._exit(EXIT_STATUS)


# The alarm of the task running now (a solo node runs one at a time), for _limit_body.
_current: _Alarm | None = None


def _limit_body(name: str, run: Callable[..., object]) -> Callable[..., object]:
    """run, with the running task's alarm stopped when it returns or raises."""

    @functools.wraps(run)
    def body(*args: object, **kwargs: object) -> object:
        alarm = _current
        # Only the traced task's own body, entered once: not another task's run called
        # directly from it, nor the same task called recursively.
        if alarm is None or alarm.in_body or alarm.task_name != name:
            return run(*args, **kwargs)
        alarm.in_body = True
        try:
            return run(*args, **kwargs)
        finally:
            alarm.stop()

    setattr(body, _BODY_MARK, True)
    return body


class TaskPool(solo.TaskPool):
    """The solo pool, enforcing soft_timeout and timeout as prefork does."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        # solo's __init__ binds on_apply on the instance (to apply_target): replace that binding.
        self.on_apply = self.apply_with_limits  # type: ignore[method-assign,assignment]

    def on_start(self) -> None:
        super().on_start()
        # The worker starts its pool before its consumer builds each task's tracer, which
        # calls task.run (or the task, whose __call__ calls self.run): wrap run now.
        if self.app is None:
            return
        for name, task in self.app.tasks.items():
            if not getattr(task.run, _BODY_MARK, False):
                task.run = _limit_body(name, task.run)

    def apply_with_limits(
        self,
        target: Callable[..., object],
        args: Sequence[object] = (),
        kwargs: Mapping[str, object] | None = None,
        soft_timeout: float | None = None,
        timeout: float | None = None,
        timeout_callback: Callable[..., object] | None = None,
        **options: object,
    ) -> None:
        # The worker's target is Celery's tracer; its first argument is the task's name.
        alarm = _Alarm(soft_timeout, timeout, timeout_callback, args[0] if args else None)

        def limited(*call_args: object, **call_kwargs: object) -> object:
            with alarm:
                return target(*call_args, **call_kwargs)

        # apply_target calls the accept callback before limited and the result callback
        # (which acknowledges the message) after it: both outside the limits.
        apply_target(limited, args, kwargs, **options)
