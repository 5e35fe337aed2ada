"""The bundled tasks. Delivery is at least once (acks_late), so every task is idempotent."""

import hashlib
import json
import math
import os
import time
import uuid
from http.client import HTTPMessage
from typing import IO
from urllib.error import HTTPError, URLError
from urllib.parse import urlsplit
from urllib.request import HTTPRedirectHandler, Request, build_opener

from celery import Task
from celery.exceptions import Reject, SoftTimeLimitExceeded
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from taskapp.app import app

FETCH_TIMEOUT = 10
_CHUNK = 64 * 1024
# Failures to reach the server at all; an HTTP answer, whatever its status, is not one of them.
NETWORK_ERRORS = (URLError, TimeoutError, ConnectionError)


@app.task(name="taskapp.ping")
def ping() -> str:
    return "pong"


@app.task(name="taskapp.process_data")
def process_data(data: list[float]) -> dict[str, object]:
    """Count, sum, mean, min, max and a sha256 of the input's canonical JSON."""
    if not isinstance(data, list):
        raise TypeError(f"data must be a list of numbers, got {type(data).__name__}")
    for i, x in enumerate(data):
        # bool is an int subclass, but True is not a measurement.
        if isinstance(x, bool) or not isinstance(x, int | float):
            raise TypeError(f"data[{i}] must be a number, got {type(x).__name__}")
        if not math.isfinite(x):
            raise ValueError(f"data[{i}] must be finite, got {x}")
    canonical = json.dumps(data, separators=(",", ":"), allow_nan=False)
    total = math.fsum(data)
    return {
        "count": len(data),
        "sum": total,
        "mean": total / len(data) if data else None,
        "min": min(data) if data else None,
        "max": max(data) if data else None,
        "sha256": hashlib.sha256(canonical.encode()).hexdigest(),
    }


# About 5 ms of one core on the 2-core machine the benchmarks ran on (sha256 is ~0.55 us a round).
BURN_DEFAULT_ROUNDS = 9000
BURN_MAX_ROUNDS = 10_000_000


@app.task(name="taskapp.burn")
def burn(rounds: int = BURN_DEFAULT_ROUNDS) -> str:
    """Chain sha256 rounds times: a fixed amount of CPU work, not of time (benchmarks).

    A loop that ran for a fixed time would finish as fast on one busy core as on ten.
    """
    if isinstance(rounds, bool) or not isinstance(rounds, int):
        raise TypeError(f"rounds must be an integer, got {type(rounds).__name__}")
    if not 0 <= rounds <= BURN_MAX_ROUNDS:
        raise ValueError(f"rounds must be between 0 and {BURN_MAX_ROUNDS}, got {rounds}")
    digest = b"taskapp"
    for _ in range(rounds):
        digest = hashlib.sha256(digest).digest()
    return digest.hex()


# A sleep longer than any sane time limit is a mistake in the caller, not a long task.
MAX_SLEEP_SECONDS = 3600
EXECUTIONS_KEY = "taskapp-executions:"


@app.task(name="taskapp.sleep", track_started=True)
def sleep(seconds: float) -> float:
    """Sleep, then return the seconds slept: a stand-in for a long task (shutdown, drain tests)."""
    _check_seconds(seconds)
    time.sleep(seconds)
    return float(seconds)


def _check_seconds(seconds: object) -> None:
    if isinstance(seconds, bool) or not isinstance(seconds, int | float):
        raise TypeError(f"seconds must be a number, got {type(seconds).__name__}")
    if not 0 <= seconds <= MAX_SLEEP_SECONDS:
        raise ValueError(f"seconds must be between 0 and {MAX_SLEEP_SECONDS}, got {seconds}")


def executions_key(label: str) -> str:
    """The Redis list (result database) where record(label) appends, under the key prefix."""
    options = app.conf.result_backend_transport_options or {}
    return f"{options.get('global_keyprefix', '')}{EXECUTIONS_KEY}{label}"


@app.task(name="taskapp.record", bind=True)
def record(self: Task[..., object], label: str = "beat") -> dict[str, object]:
    """Append this execution (id, worker, time) to a list, so a client can count executions.

    Beat's periodic task: "ran once per interval, not once per host" is a count of this list.
    """
    entry: dict[str, object] = {"id": self.request.id, "worker": self.request.hostname}
    entry["at"] = time.time()
    _append_or_hand_back(label, entry)
    return entry


MAX_KEY_LENGTH = 200


@app.task(name="taskapp.record_work", bind=True)
def record_work(
    self: Task[..., object], key: str, seconds: float = 0.0, label: str = "work"
) -> dict[str, object]:
    """Record a start, sleep, record a done: every execution of an idempotency key is counted.

    The fault-injection suite (chaos/) sends each key once; a key with no "done" entry was lost,
    a key with two was executed twice, and a "start" without its "done" is an execution killed
    midway (its "execution" id pairs the two entries).
    """
    if not isinstance(key, str) or not 0 < len(key) <= MAX_KEY_LENGTH:
        raise TypeError(f"key must be a string of 1 to {MAX_KEY_LENGTH} characters, got {key!r}")
    _check_seconds(seconds)
    base: dict[str, object] = {
        "key": key,
        "execution": uuid.uuid4().hex,
        "id": self.request.id,
        "worker": self.request.hostname,
        "pid": os.getpid(),
    }
    _append_or_hand_back(label, {**base, "phase": "start", "at": time.time()})
    time.sleep(seconds)
    done = {**base, "phase": "done", "at": time.time()}
    _append_or_hand_back(label, done)
    return done


# How long a task keeps trying to write its record while Redis is unreachable (a restart takes a
# second or two). Giving up at once fails the task, and Celery acknowledges a failed task: lost.
WRITE_RETRY_SECONDS = 15.0
_REDIS_UNREACHABLE = (RedisConnectionError, RedisTimeoutError)


def _append_or_hand_back(label: str, entry: dict[str, object]) -> None:
    """Append, or give the message back to the broker when Redis stays away.

    A task that fails is acknowledged (task_acks_on_failure_or_timeout), so its message is gone.
    When the write cannot be made, in the retry window or before the soft time limit, the task
    rejects its message with requeue instead: the worker puts it back in the queue (or, if the
    broker is still unreachable, it stays in kombu's unacked set and comes back after the
    visibility timeout). Not Task.retry(): that publishes a new message, which fails the same way.
    """
    try:
        _append(label, entry)
    except (*_REDIS_UNREACHABLE, SoftTimeLimitExceeded) as exc:
        raise Reject(f"could not write to {label}: {exc!r}", requeue=True) from exc


def _append(label: str, entry: dict[str, object]) -> None:
    client = app.backend.client  # type: ignore[attr-defined]  # RedisBackend, not in the stubs
    key = executions_key(label)
    deadline = time.monotonic() + WRITE_RETRY_SECONDS
    delay = 0.1
    while True:
        try:
            # A reply lost after RPUSH applied repeats the entry: readers count distinct
            # executions (each entry carries its execution's id), so a repeat is harmless.
            client.rpush(key, json.dumps(entry))
            client.expire(key, app.conf.result_expires)
            return
        except _REDIS_UNREACHABLE:
            if time.monotonic() + delay > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 2.0)


def check_scheme(url: str) -> None:
    scheme = urlsplit(url).scheme.lower()
    if scheme not in ("http", "https"):
        raise ValueError(f"only http and https URLs are fetched, not {scheme or 'no'} scheme")


class _HttpOnlyRedirects(HTTPRedirectHandler):
    # urllib follows redirects to ftp:// too; the scheme rule must hold after a redirect.
    def redirect_request(
        self, req: Request, fp: IO[bytes], code: int, msg: str, headers: HTTPMessage, newurl: str
    ) -> Request | None:
        check_scheme(newurl)
        return super().redirect_request(req, fp, code, msg, headers, newurl)


@app.task(
    name="taskapp.fetch_url",
    track_started=True,
    autoretry_for=NETWORK_ERRORS,
    dont_autoretry_for=(HTTPError,),
    max_retries=5,
    retry_backoff=True,
    retry_backoff_max=60,
    retry_jitter=True,
)
def fetch_url(url: str) -> dict[str, object]:
    """GET url. Any HTTP status is returned as the result; only network errors are retried."""
    check_scheme(url)
    opener = build_opener(_HttpOnlyRedirects)
    try:
        response = opener.open(url, timeout=FETCH_TIMEOUT)
    except HTTPError as exc:
        response = exc
    with response:
        digest = hashlib.sha256()
        size = 0
        while chunk := response.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
        return {"url": url, "status": response.status, "bytes": size, "sha256": digest.hexdigest()}
