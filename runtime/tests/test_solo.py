"""The solo pool with time limits (rcbundle.solo)."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator

import pytest
from celery import Celery, uuid
from celery.app.trace import trace_task_ret
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


@pytest.mark.parametrize(
    ("acks_on_timeout", "settled"), [(True, "ack"), (False, "reject requeue=True")]
)
def test_a_task_that_swallows_every_limit_is_recorded_as_timed_out_before_the_node_ends(
    acks_on_timeout: bool, settled: str
) -> None:
    # The worker passes the Request's on_timeout as timeout_callback, as it does to prefork,
    # whose parent calls it for a child it killed: it stores FAILURE and decides to acknowledge
    # (or requeue), which Celery carries out later in its event loop: the pool does it at once.
    program = textwrap.dedent(f"""
        import time
        from types import SimpleNamespace
        from rcbundle import solo as m
        m.HARD_EXIT_GRACE = 0.3
        def deaf():
            for _ in range(100):
                try:
                    time.sleep(10)
                except Exception:
                    pass
        class Message:
            acknowledged = False
            def ack(self):
                print("ack", flush=True)
            def reject(self, requeue):
                print(f"reject requeue={{requeue}}", flush=True)
        class Request:
            message = Message()
            task = SimpleNamespace(acks_late=True, acks_on_timeout={acks_on_timeout})
            def on_timeout(self, soft, timeout):
                print(f"on_timeout soft={{soft}} timeout={{timeout}}", flush=True)
        m.TaskPool(limit=1).apply_async(
            deaf, soft_timeout=0.1, timeout=0.2, timeout_callback=Request().on_timeout
        )
        print("not reached")
    """)
    done = _run(program)
    assert done.returncode == celery_solo_limits.EXIT_STATUS, done
    assert done.stdout.splitlines() == [
        "on_timeout soft=True timeout=0.1",
        "on_timeout soft=False timeout=0.2",
        settled,
    ], done


def test_a_time_out_that_cannot_be_recorded_still_ends_the_node() -> None:
    program = textwrap.dedent("""
        import time
        from rcbundle import solo as m
        m.HARD_EXIT_GRACE = 0.2
        m.RECORD_GRACE = 0.3
        def deaf():
            while True:
                try:
                    time.sleep(10)
                except Exception:
                    pass
        def on_timeout(soft, timeout):
            if not soft:
                deaf()  # a result store that never answers
        m.TaskPool(limit=1).apply_async(
            deaf, soft_timeout=0.1, timeout=0.2, timeout_callback=on_timeout
        )
    """)
    done = _run(program)
    assert done.returncode == celery_solo_limits.EXIT_STATUS, done
    assert "recording the time-out took too long" in done.stderr


def test_the_limits_do_not_cover_accepting_and_acknowledging(
    pool: celery_solo_limits.TaskPool,
) -> None:
    # accept_callback and callback are where Celery acknowledges (early and late acks).
    acked: list[object] = []

    def slow_accept(pid: int, accepted_at: float) -> None:
        time.sleep(0.5)

    def slow_ack(returned: object) -> None:
        time.sleep(0.8)
        acked.append(returned)

    pool.apply_async(
        lambda: "done",
        accept_callback=slow_accept,
        callback=slow_ack,
        soft_timeout=0.2,
        timeout=0.4,
    )
    assert acked == ["done"]


@pytest.fixture
def app() -> Iterator[Celery]:
    app = Celery("solotest", set_as_current=False)
    app.conf.update(broker_url="memory://", result_backend="cache+memory://")
    yield app
    app.close()


def _trace(
    pool: celery_solo_limits.TaskPool, app: Celery, name: str, **limits: float
) -> tuple[str, list[object]]:
    """Run the task as the worker does: Celery's tracer, given to the pool with the task's name."""
    task_id = uuid()
    returned: list[object] = []
    pool.apply_async(
        trace_task_ret,
        args=(name, task_id, {"id": task_id}, ((), {}, None), None, None),
        kwargs={"app": app},
        callback=returned.append,
        **limits,
    )
    return task_id, returned


def test_the_limits_do_not_cover_storing_the_result(
    app: Celery, monkeypatch: pytest.MonkeyPatch
) -> None:
    @app.task(name="solotest.quick")
    def quick() -> str:
        return "done"

    store: Callable[..., object] = app.backend.store_result

    def slow_store(*args: object, **kwargs: object) -> object:
        time.sleep(1.0)  # past both limits below
        return store(*args, **kwargs)

    monkeypatch.setattr(app.backend, "store_result", slow_store)
    pool = celery_solo_limits.TaskPool(limit=1, app=app)
    pool.start()  # as the worker does, before its consumer builds the tracers
    task_id, returned = _trace(pool, app, "solotest.quick", soft_timeout=0.3, timeout=0.6)
    (outcome,) = returned  # Celery's (failed, result repr, runtime)
    assert isinstance(outcome, tuple)
    assert outcome[:2] == (0, "'done'")
    assert app.AsyncResult(task_id).get(timeout=1) == "done"
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)


def test_another_tasks_body_called_inside_the_task_does_not_end_its_limits(app: Celery) -> None:
    @app.task(name="solotest.inner")
    def inner() -> int:
        return 1

    @app.task(name="solotest.outer")
    def outer() -> int:
        value = int(inner())  # inner's run, called directly: part of outer's body
        time.sleep(10)
        return value

    pool = celery_solo_limits.TaskPool(limit=1, app=app)
    pool.start()
    pool.start()  # a second start wraps nothing twice
    task_id, _ = _trace(pool, app, "solotest.outer", soft_timeout=0.3, timeout=0.6)
    result = app.AsyncResult(task_id)
    assert result.state == "FAILURE"
    assert isinstance(result.result, SoftTimeLimitExceeded)
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)


def _run(program: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=30, check=False
    )
