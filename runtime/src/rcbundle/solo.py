"""Celery's solo pool with the soft and hard time limits that the stock solo pool ignores.

The celery_worker role runs its `solo` nodes with this pool: the unit sets
CELERY_CUSTOM_WORKER_POOL=rcbundle.solo:TaskPool and passes `--pool custom`.
A solo node runs each task in its main thread, with no pool process to talk to,
which is why it consumes faster than a prefork node (BENCHMARKS.md). Because no
parent process watches the task, this pool arms SIGALRM around each task:

- at the soft limit it raises SoftTimeLimitExceeded in the task, as prefork does;
- at the hard limit it raises TimeLimitExceeded, and the task fails with it.
  Celery acknowledges that failure as it does a prefork hard time-out. Prefork
  kills its child instead; a solo node cannot kill its only process and carry on;
- a task that swallows both is still running HARD_EXIT_GRACE seconds later. The
  node then exits with status 70. systemd restarts it, and its message comes back
  after the visibility timeout.

Blocking system calls are interrupted (PEP 475 re-raises from the handler). C code
that holds the GIL without checking for signals is not interrupted.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Mapping, Sequence
from types import FrameType

from rcbundle import versions

versions.check()

from celery.concurrency import solo  # noqa: E402
from celery.concurrency.base import apply_target  # noqa: E402
from celery.exceptions import SoftTimeLimitExceeded, TimeLimitExceeded  # noqa: E402

HARD_EXIT_GRACE = 5.0
EXIT_STATUS = 70  # EX_SOFTWARE


class _Alarm:
    """The limits of one task as a list of (seconds after start, what happens)."""

    def __init__(self, soft: float | None, hard: float | None) -> None:
        stages: list[tuple[float, type[Exception] | None]] = []
        if soft:
            stages.append((float(soft), SoftTimeLimitExceeded))
        if hard:
            stages += [(float(hard), TimeLimitExceeded), (float(hard) + HARD_EXIT_GRACE, None)]
        self.stages = sorted(stages, key=lambda stage: stage[0])
        self.started = time.monotonic()

    def arm(self) -> None:
        if self.stages:
            left = self.stages[0][0] - (time.monotonic() - self.started)
            signal.setitimer(signal.ITIMER_REAL, max(left, 0.001))

    def fire(self, signum: int, frame: FrameType | None) -> None:
        at, exc = self.stages.pop(0)
        self.arm()
        if exc is None:
            os.write(2, f"rcbundle.solo: task still running {at:g}s after start, "
                        "past its hard time limit; exiting\n".encode())  # fmt: skip
            os._exit(EXIT_STATUS)
        raise exc(f"{exc.__name__.removesuffix('Exceeded')} ({at:g}s) exceeded")


class TaskPool(solo.TaskPool):
    """The solo pool, enforcing soft_timeout and timeout as prefork does."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        # solo's __init__ binds on_apply on the instance (to apply_target): replace that binding.
        self.on_apply = self.apply_with_limits  # type: ignore[method-assign,assignment]

    def apply_with_limits(
        self,
        target: Callable[..., object],
        args: Sequence[object] = (),
        kwargs: Mapping[str, object] | None = None,
        soft_timeout: float | None = None,
        timeout: float | None = None,
        **options: object,
    ) -> None:
        alarm = _Alarm(soft_timeout, timeout)
        previous = signal.signal(signal.SIGALRM, alarm.fire)
        alarm.arm()
        try:
            apply_target(target, args, kwargs, **options)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
