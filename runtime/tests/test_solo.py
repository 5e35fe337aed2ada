"""The solo pool with time limits (rcbundle.solo)."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator

import pytest
from celery.exceptions import SoftTimeLimitExceeded, TimeLimitExceeded

from rcbundle import solo as celery_solo_limits


@pytest.fixture
def pool() -> Iterator[celery_solo_limits.TaskPool]:
    yield celery_solo_limits.TaskPool(limit=1, soft_timeout=300, timeout=330)
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0), "an alarm outlived its task"


def apply(
    pool: celery_solo_limits.TaskPool, target: Callable[[], object], **limits: float | None
) -> list[object]:
    returned: list[object] = []
    pool.apply_async(target, callback=returned.append, **limits)
    return returned


def test_a_task_within_its_limits_returns_and_leaves_no_alarm(
    pool: celery_solo_limits.TaskPool,
) -> None:
    before = signal.getsignal(signal.SIGALRM)
    assert apply(pool, lambda: "done", soft_timeout=0.5, timeout=1) == ["done"]
    time.sleep(1.2)  # an alarm left armed would fire here
    assert signal.getsignal(signal.SIGALRM) is before


def test_the_soft_limit_raises_in_the_task(pool: celery_solo_limits.TaskPool) -> None:
    started = time.monotonic()
    with pytest.raises(SoftTimeLimitExceeded):
        apply(pool, lambda: time.sleep(10), soft_timeout=0.3, timeout=5)
    assert 0.25 < time.monotonic() - started < 2


def test_the_hard_limit_raises_when_the_task_ignores_the_soft_one(
    pool: celery_solo_limits.TaskPool,
) -> None:
    def stubborn() -> None:
        try:
            time.sleep(10)
        except SoftTimeLimitExceeded:
            time.sleep(10)

    started = time.monotonic()
    with pytest.raises(TimeLimitExceeded):
        apply(pool, stubborn, soft_timeout=0.2, timeout=0.6)
    assert 0.55 < time.monotonic() - started < 2


def test_a_hard_limit_alone_is_enforced(pool: celery_solo_limits.TaskPool) -> None:
    with pytest.raises(TimeLimitExceeded):
        apply(pool, lambda: time.sleep(10), soft_timeout=None, timeout=0.3)


def test_a_task_that_swallows_every_limit_ends_the_node() -> None:
    program = textwrap.dedent("""
        import time
        from rcbundle import solo as m
        m.HARD_EXIT_GRACE = 0.3
        def deaf():
            for _ in range(100):
                try:
                    time.sleep(10)
                except Exception:
                    pass
        m.TaskPool(limit=1).apply_async(deaf, soft_timeout=0.1, timeout=0.2)
        print("not reached")
    """)
    done = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=30, check=False
    )
    assert done.returncode == celery_solo_limits.EXIT_STATUS, done
    assert "past its hard time limit" in done.stderr
    assert "not reached" not in done.stdout
