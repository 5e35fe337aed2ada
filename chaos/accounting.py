"""Counting executions and delays: the pure part of the suite, tested without a lab."""

from __future__ import annotations

import json
import math
import statistics
from collections import Counter
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Entry:
    """One line taskapp.record_work appended: an execution's start or its done."""

    key: str
    execution: str
    worker: str
    phase: str
    at: float

    @property
    def host(self) -> str:
        return host_of(self.worker)


def host_of(worker: str) -> str:
    """`default@chaos-worker1` -> `chaos-worker1`."""
    return worker.rpartition("@")[2]


def parse_entries(raw: Iterable[str | bytes]) -> list[Entry]:
    out = []
    for item in raw:
        data = json.loads(item)
        out.append(
            Entry(
                key=str(data["key"]),
                execution=str(data["execution"]),
                worker=str(data["worker"]),
                phase=str(data["phase"]),
                at=float(data["at"]),
            )
        )
    return out


@dataclass(frozen=True)
class Event:
    """A fault injected on one host (a kill, a stop, a cut), as the controller's clock saw it:
    on every worker node of the host, or on one (worker, e.g. `default-2@chaos-worker1`)."""

    host: str
    at: float
    worker: str | None = None

    def hits(self, start: Entry) -> bool:
        """Whether the fault struck the node that wrote this entry."""
        return start.host == self.host and self.worker in (None, start.worker)


@dataclass(frozen=True)
class Tally:
    accepted: int  # keys the producer was told were queued
    executed: int  # accepted keys with at least one completed execution
    lost: int  # accepted keys never completed
    duplicates: int  # completed executions beyond the first, over accepted keys
    duplicate_keys: int
    interrupted: int  # executions that started and never completed (killed midway)
    unaccepted_executed: int  # keys whose send raised, and that ran anyway

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


def tally(accepted: Collection[str], entries: Sequence[Entry]) -> Tally:
    accepted = set(accepted)
    # Distinct executions: a record written twice (a retried write) is still one execution.
    done = Counter(key for key, _ in {(e.key, e.execution) for e in entries if e.phase == "done"})
    finished = {e.execution for e in entries if e.phase == "done"}
    started = {e.execution for e in entries if e.phase == "start"}
    lost = never_completed(accepted, entries)
    executed = accepted - set(lost)
    return Tally(
        accepted=len(accepted),
        executed=len(executed),
        lost=len(lost),
        duplicates=sum(done[k] - 1 for k in executed),
        duplicate_keys=sum(1 for k in executed if done[k] > 1),
        interrupted=len(started - finished),
        unaccepted_executed=sum(1 for k in done if k not in accepted),
    )


def never_completed(accepted: Collection[str], entries: Sequence[Entry]) -> list[str]:
    """The accepted keys with no completed execution: the lost tasks, to look up in journals."""
    done = {e.key for e in entries if e.phase == "done"}
    return sorted(set(accepted) - done)


def interrupted_by(entries: Sequence[Entry], events: Sequence[Event]) -> list[tuple[Event, Entry]]:
    """Each execution that never completed, with the first event on its host after it started."""
    finished = {e.execution for e in entries if e.phase == "done"}
    pairs = []
    for start in entries:
        if start.phase != "start" or start.execution in finished:
            continue
        later = [ev for ev in events if ev.hits(start) and ev.at >= start.at]
        if later:
            pairs.append((min(later, key=lambda ev: ev.at), start))
    return pairs


def redelivery_delays(entries: Sequence[Entry], events: Sequence[Event]) -> list[float]:
    """Seconds from the event that interrupted an execution to the next start of the same key."""
    delays = []
    for event, start in interrupted_by(entries, events):
        again = [
            e.at for e in entries if e.key == start.key and e.phase == "start" and e.at > event.at
        ]
        if again:
            delays.append(min(again) - event.at)
    return delays


def running_at(entries: Sequence[Entry], host: str, at: float) -> list[str]:
    """Executions on host that had started by `at` and not completed by then."""
    done_at = {e.execution: e.at for e in entries if e.phase == "done"}
    return [
        e.execution
        for e in entries
        if e.phase == "start"
        and e.host == host
        and e.at <= at
        and done_at.get(e.execution, math.inf) > at
    ]


def completed(entries: Sequence[Entry], executions: Collection[str], by: float) -> int:
    """How many of executions completed at or before `by`."""
    wanted = set(executions)
    return sum(1 for e in entries if e.phase == "done" and e.execution in wanted and e.at <= by)


def first_start(entries: Sequence[Entry], host: str, after: float) -> float | None:
    """When host next started an execution after `after` (None: it did not)."""
    times = [e.at for e in entries if e.phase == "start" and e.host == host and e.at > after]
    return min(times) if times else None


def percentile(values: Sequence[float], p: float) -> float:
    """The nearest-rank p-th percentile: the smallest value with at least p % of the values at
    or below it (never an interpolation; with fewer than 100 values the p99 is the max)."""
    ordered = sorted(values)
    return ordered[max(math.ceil(p / 100 * len(ordered)), 1) - 1]


def summary(values: Sequence[float]) -> dict[str, float | int | None]:
    """n, p50 (the median), p99 (nearest rank), max and min, rounded to 0.1 s; None when there
    are no values."""
    if not values:
        return {"n": 0, "p50": None, "p99": None, "max": None, "min": None}
    return {
        "n": len(values),
        "p50": round(statistics.median(values), 1),
        "p99": round(percentile(values, 99), 1),
        "max": round(max(values), 1),
        "min": round(min(values), 1),
    }
