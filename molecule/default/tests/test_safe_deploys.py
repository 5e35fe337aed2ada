"""Safe deploys: a broken change, applied to the converged fleet by a full deploy.yml under a
stream of tasks from a plain Celery producer, never leaves a serving host down.

Three changes that pass every check of the validate play, one class each: an inventory value
that makes the worker nodes exit at start, a release whose import fails, and a Redis setting
Redis refuses at start. For each: the run fails with a message naming the cause, the failed
host is back on its earlier release and configuration (every host serves its queues), the
stream lost no task, and a run with the good inventory changes nothing. The figures (tasks sent,
lost, how long the host was down, how long its rollback took) go to build/safe-deploys.json.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from celery import Celery, states
from celery.result import AsyncResult
from conftest import REPO

from testkit import molecule_inventory, on, playbook, recap

WORKER1, WORKER2, REDIS1 = "mol-default-worker1", "mol-default-worker2", "mol-default-redis1"
WORKERS = (WORKER1, WORKER2)
FIGURES = REPO / "build/safe-deploys.json"


def outcome(result: AsyncResult, timeout: float = 60) -> object:
    """A task's return value, read from the result store until it is there.

    Not with result.get(): after a Redis restart, Celery's Redis result consumer can miss the
    announcement of a result stored while it reconnects (it reads the stored results, then
    subscribes again), and get() then waits out its whole timeout for a task that ran at once
    (README, "Redis restarts"). What these tests check is the fleet, not that client race.
    """
    deadline = time.monotonic() + timeout
    while True:
        meta = result.backend.get_task_meta(result.id)
        if meta["status"] in states.READY_STATES:
            break
        if time.monotonic() > deadline:
            raise TimeoutError(f"task {result.id}: {meta['status']} after {timeout} s")
        time.sleep(0.2)
    assert meta["status"] == states.SUCCESS, meta
    return meta["result"]


class Stream:
    """Tasks sent without pause by a plain producer, as an app would: a send the broker does
    not take (Redis restarting) is sent again, so every task counted as sent was accepted."""

    def __init__(self, client: Celery) -> None:
        self.client = client
        self.sent: list[AsyncResult] = []
        self.resends = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Stream:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=60)

    def _run(self) -> None:
        i = 0
        while not self._stop.is_set():
            try:
                result = self.client.send_task(
                    "textstats.tasks.words", args=(f"safe deploy {i}",), retry=False
                )
            except Exception:  # the broker is away (Redis restarting): send the same task again
                self.resends += 1
                time.sleep(0.5)
                continue
            self.sent.append(result)
            i += 1
            time.sleep(0.2)

    def lost(self, timeout: float = 120) -> list[str]:
        """The ids of sent tasks whose result never came."""
        deadline = time.monotonic() + timeout
        lost = []
        for result in self.sent:
            try:
                outcome(result, timeout=max(1.0, deadline - time.monotonic()))
            except Exception:  # a timeout or a lost result: counted, reported
                lost.append(result.id)
        return lost


class Downtime:
    """How long a host's worker nodes (or Redis) were not all active, sampled once a second."""

    def __init__(self, host: str, command: str) -> None:
        self.host, self.command = host, command
        self.down_seconds = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Downtime:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            states = on(self.host, self.command, check=False).split()
            if not states or any(state != "active" for state in states):
                self.down_seconds += 1.0
            self._stop.wait(max(0.0, 1.0 - (time.monotonic() - started)))


def deploy(*extra: str) -> subprocess.CompletedProcess[str]:
    # profile_tasks prints when each task starts: the rollback's own duration comes from it.
    os.environ["ANSIBLE_CALLBACKS_ENABLED"] = "ansible.posix.profile_tasks"
    return playbook("deploy.yml", molecule_inventory(), *extra, timeout=1200)


def elapsed_at(stdout: str, task: str) -> float:
    """Seconds since the run's start when a task began: the profile_tasks callback's line right
    after the task's header (TASK [ROLE : NAME ...)."""
    header = re.search(r"^TASK \[\w+ : " + re.escape(task), stdout, re.M)
    assert header, task
    match = re.search(r"\(\d+:\d+:[\d.]+\)\s+(\d+):(\d+):([\d.]+)", stdout[header.end() :])
    assert match, task
    hours, minutes, seconds = match.groups()
    return int(hours) * 3600 + int(minutes) * 60 + float(seconds)


def serves_every_queue(client: Celery) -> None:
    """Both hosts answer, each consumes its queues, and a task of each route round-trips."""
    # After a Redis restart the nodes reconnect on their own schedule (Celery's backoff).
    expected = {f"default@{WORKER1}", f"default@{WORKER2}"}
    deadline = time.monotonic() + 60
    answering: set[str] = set()
    while not expected <= answering and time.monotonic() < deadline:
        answering = {name for reply in client.control.ping(timeout=5) for name in reply}
    assert expected <= answering, answering
    queues = client.control.inspect(timeout=5).active_queues() or {}
    for node, consumed in queues.items():
        assert {q["name"] for q in consumed} == {"celery", "text"}, node
    assert outcome(client.send_task("textstats.tasks.slug", args=("Back Again",))) == "back-again"
    words = [client.send_task("textstats.tasks.words", args=("a b",)) for _ in range(8)]
    assert all(outcome(r) == {"words": 2, "top": ["a", "b"]} for r in words)


def changed_tasks(stdout: str) -> list[str]:
    """Each task that changed a host, with its lines: what a run that should change nothing did."""
    blocks = re.split(r"^(?=TASK \[)", stdout, flags=re.M)
    return [block.strip() for block in blocks if re.search(r"^changed: ", block, re.M)]


def unchanged_on_rerun() -> None:
    proc = deploy()
    assert proc.returncode == 0, proc.stdout[-3000:]
    counts = recap(proc.stdout)
    assert counts, proc.stdout[-3000:]
    assert all(c["changed"] == 0 for c in counts.values()), changed_tasks(proc.stdout)
    assert all(c["failed"] == 0 for c in counts.values()), counts


@pytest.fixture(scope="module")
def figures() -> Iterator[dict[str, Any]]:
    found: dict[str, Any] = {}
    yield found
    FIGURES.parent.mkdir(exist_ok=True)
    FIGURES.write_text(json.dumps(found, indent=2, sort_keys=True) + "\n")


def broken_change(
    client: Celery, figures: dict[str, Any], case: str, host: str, probe: str, *extra: str
) -> str:
    """Apply a change under the stream; return the failed run's output after the common checks."""
    with Stream(client) as stream, Downtime(host, probe) as downtime:
        started = time.monotonic()
        proc = deploy(*extra)
        elapsed = time.monotonic() - started
        time.sleep(2)
    assert proc.returncode != 0, proc.stdout[-3000:]
    out = proc.stdout
    # The rescue ran, on the failed host only, and the run stopped there.
    counts = recap(out)
    assert counts[host]["failed"] == 1, counts
    assert counts[host]["rescued"] == 1, counts
    assert all(c["failed"] == 0 for h, c in counts.items() if h != host), counts
    rollback = elapsed_at(out, "Stop with") - elapsed_at(out, "Roll back]")
    serves_every_queue(client)
    lost = stream.lost()
    figures[case] = {
        "tasks_sent": len(stream.sent),
        "tasks_lost": len(lost),
        "sends_retried": stream.resends,
        "host_down_seconds": downtime.down_seconds,
        "deploy_seconds": round(elapsed, 1),
        "rollback_seconds": round(rollback, 1),
    }
    assert stream.sent, "the stream sent nothing"
    assert lost == [], f"{len(lost)} of {len(stream.sent)} tasks lost"
    return out


def copy_of_the_app(tmp_path: Path) -> Path:
    """The scenario's app, copied to change its code: a release of its own."""
    app = tmp_path / "textstats"
    shutil.copytree(
        REPO / "tests/apps/textstats",
        app,
        ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"),
    )
    return app


def links(host: str) -> tuple[str, str]:
    """The release a worker host runs and the one the last deploy replaced."""
    current, previous = on(host, "readlink /opt/textstats/current /opt/textstats/previous").split()
    return current, previous


WORKER_UNITS = "systemctl show -p ActiveState --value 'celery-worker@*'"


def test_a_value_that_makes_the_nodes_exit_is_rolled_back(
    client: Celery, figures: dict[str, Any]
) -> None:
    # A well-formed module path (the validate play checks the form) naming no Celery app:
    # every node of the first host exits at start with Celery's own complaint.
    extra = json.dumps({"celery_worker_app_module": "textstats.worker:no_such_app"})
    out = broken_change(
        client, figures, "value that makes the worker exit", WORKER1, WORKER_UNITS, "-e", extra
    )
    assert "celery-worker@default.service is" in out
    # The node's own last log lines: Celery's complaint.
    assert "The module textstats.worker:no_such_app was not found." in out
    # What changed, by the variable that feeds it.
    assert (
        "ExecStart --app: textstats.worker:celery_app -> textstats.worker:no_such_app"
        " (celery_worker_app_module)" in out
    )
    assert "Rolled back: the host runs release" in out
    assert WORKER2 not in re.findall(r"changed: \[(\S+)\]", out)  # the rest of the fleet
    unchanged_on_rerun()


def test_a_release_whose_import_fails_is_rolled_back(
    client: Celery, figures: dict[str, Any], tmp_path: Path
) -> None:
    app = copy_of_the_app(tmp_path)
    # The same dependencies, so the copied lock still holds; only the code breaks.
    (app / "src/textstats/broken.py").write_text(
        'raise RuntimeError("textstats.broken: refusing to import")\n'
    )
    worker = app / "src/textstats/worker.py"
    worker.write_text(worker.read_text() + "\nimport textstats.broken  # noqa: E402, F401\n")
    before = on(WORKER1, "readlink /opt/textstats/current").strip()
    out = broken_change(
        client,
        figures,
        "release whose import fails",
        WORKER1,
        WORKER_UNITS,
        "-e",
        f"app_release_source_dir={app}",
    )
    assert "RuntimeError: textstats.broken: refusing to import" in out
    assert re.search(r"release: \S+ -> \S+ \(the app built from app_release_source_dir", out)
    assert on(WORKER1, "readlink /opt/textstats/current").strip() == before
    unchanged_on_rerun()


def test_a_setting_redis_refuses_is_rolled_back(client: Celery, figures: dict[str, Any]) -> None:
    address = on(
        REDIS1, "ip -4 -o addr show scope global | awk '{print $4}' | cut -d/ -f1"
    ).split()[0]
    # Well-formed addresses, but 192.0.2.1 (TEST-NET-1) is not on the host: Redis cannot bind it.
    extra = json.dumps({"redis_bind": ["127.0.0.1", address, "192.0.2.1"]})
    out = broken_change(
        client,
        figures,
        "setting Redis refuses",
        REDIS1,
        "systemctl show -p ActiveState --value redis-server",
        "-e",
        extra,
    )
    assert "Redis did not take this run's change" in out
    assert "192.0.2.1" in out
    assert "redis_bind" in out
    # Redis's own words.
    assert "Could not create server TCP listening socket 192.0.2.1:6379" in out
    assert "Rolled back: the earlier configuration is back and answers" in out
    # Redis failed before the workers' play: no worker host was touched.
    assert "PLAY [Celery workers]" not in out
    unchanged_on_rerun()


def test_the_rollback_playbook_goes_back_to_the_replaced_release(
    client: Celery, figures: dict[str, Any], tmp_path: Path
) -> None:
    """playbooks/rollback.yml, as the README shows it: a dry run that names each host's switch
    and changes nothing, then the switch under a stream, host by host, losing no task."""
    first = {host: on(host, "readlink /opt/textstats/current").strip() for host in WORKERS}
    app = copy_of_the_app(tmp_path)
    (app / "src/textstats/revision.py").write_text('REVISION = "a second, good release"\n')
    proc = deploy("-e", f"app_release_source_dir={app}")
    assert proc.returncode == 0, proc.stdout[-3000:]
    second = {host: links(host) for host in WORKERS}
    for host in WORKERS:
        assert second[host] != (first[host], first[host])
        assert second[host][1] == first[host], "the deploy remembers the release it replaced"

    proc = playbook("playbooks/rollback.yml", molecule_inventory(), "--check", "--diff")
    assert proc.returncode == 0, proc.stdout[-3000:]
    for host in WORKERS:
        assert links(host) == second[host], "a dry run changes nothing"
        # The diff of each host's link: from the release it runs to the one it replaced.
        for sign, release in (("-", second[host][0]), ("+", first[host])):
            line = rf'^\{sign}\s+"?src"?: "?{re.escape(release)}"?,?$'
            assert re.search(line, proc.stdout, re.M), proc.stdout[-3000:]

    with Stream(client) as stream:
        started = time.monotonic()
        proc = playbook("playbooks/rollback.yml", molecule_inventory())
        elapsed = time.monotonic() - started
        time.sleep(2)
    assert proc.returncode == 0, proc.stdout[-3000:]
    for host in WORKERS:
        # Back on the first release; run again, it would go forward to the second.
        assert links(host) == (first[host], second[host][0])
    serves_every_queue(client)
    lost = stream.lost()
    figures["rollback playbook"] = {
        "tasks_sent": len(stream.sent),
        "tasks_lost": len(lost),
        "sends_retried": stream.resends,
        "rollback_seconds": round(elapsed, 1),
    }
    assert stream.sent, "the stream sent nothing"
    assert lost == [], f"{len(lost)} of {len(stream.sent)} tasks lost"
    # The inventory names the first release: a deploy finds the fleet as it would leave it.
    unchanged_on_rerun()
