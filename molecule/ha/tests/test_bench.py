"""`make bench-ha`: what the replicated group costs, on the ha scenario's hosts (created by
Molecule, not converged). The group's first host is deployed alone (the single-host bundle),
measured, grown into the group of three, and measured again with the durable publish (the
deployed config: WAIT for one replica) and without it (the same config with
`publish_replicas = 0`), the two alternating, with bench/client.py (the load side of `make
bench`) on the worker host as the bundle's producer. No timed assertion: the figures go to
build/bench-ha.json (BENCHMARKS.md: `python -m bench.harness --publish-ha
build/bench-ha.json`)."""

from __future__ import annotations

import json
import os
import shlex
from pathlib import Path
from typing import Any

import pytest
from conftest import (
    PYTHON,
    REDIS,
    REPO,
    WORKER,
    cli,
    deploy,
    healthy,
    master,
    on,
    one_host_inventory,
    wait_for,
)

from testkit import playbook, run

pytestmark = pytest.mark.bench

REPS = int(os.environ.get("HA_BENCH_REPS", "3"))
TASKS = 2000  # drained per measure
ROUND_TRIPS = 300  # sequential ping.delay().get()
CLIENT = "/tmp/bench-client.py"
CONFIG = "/etc/taskapp/config.toml"
NO_WAIT = "/tmp/no-durable-publish.toml"  # CONFIG with publish_replicas = 0
OUT = REPO / "build/bench-ha.json"


def client(*args: str, config: str = CONFIG) -> dict[str, Any]:
    """bench/client.py ARGS on the worker host: its one JSON object."""
    command = shlex.join([PYTHON, CLIENT, "--config", config, *args])
    done = on(WORKER).run(f"cd /tmp && {command}")
    assert done.rc == 0, done.stdout[-2000:] + done.stderr[-2000:]
    answer: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return answer


def measure(config: str = CONFIG) -> dict[str, Any]:
    """Drain throughput (the publish rate too) and idle round trips, with CONFIG."""
    drained = client("drain", "--n", str(TASKS), config=config)
    rtt = client("latency", "--n", str(ROUND_TRIPS), config=config)
    return {
        "tasks_per_s": round(drained["tasks_per_s"], 1),
        "publish_per_s": round(drained["publish_per_s"], 1),
        "samples_ms": [round(ms, 2) for ms in rtt["samples_ms"]],
    }


def copy_client() -> None:
    run("podman", "cp", str(REPO / "bench/client.py"), f"{WORKER}:{CLIENT}")


def test_the_single_host_then_the_group_with_and_without_the_durable_publish(
    tmp_path: Path,
) -> None:
    single = playbook("deploy.yml", one_host_inventory(tmp_path), timeout=1200)
    assert single.returncode == 0, single.stdout[-4000:]
    copy_client()
    figures: dict[str, list[dict[str, Any]]] = {"single host": []}
    for _ in range(REPS):
        figures["single host"].append(measure())

    grown = deploy()
    assert grown.returncode == 0, grown.stdout[-4000:]
    wait_for("the group healthy", healthy, 90)
    assert master() == REDIS[0]
    assert "publish_replicas = 1" in on(WORKER).file(CONFIG).content_string
    made = on(WORKER).run(
        f"sed 's/^publish_replicas = 1$/publish_replicas = 0/' {CONFIG} > {NO_WAIT}"
        f" && chmod 0644 {NO_WAIT}"
    )
    assert made.rc == 0, made.stderr
    copy_client()
    figures |= {"group, durable publish": [], "group, no durable publish": []}
    for rep in range(REPS):
        order = [(CONFIG, "group, durable publish"), (NO_WAIT, "group, no durable publish")]
        for config, name in order if rep % 2 == 0 else reversed(order):
            figures[name].append(measure(config))
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text(json.dumps({"reps": REPS, "tasks": TASKS, "configs": figures}) + "\n")
    # Sanity, not timing: every measure drained and answered every round trip.
    for name, reps in figures.items():
        assert all(len(r["samples_ms"]) == ROUND_TRIPS for r in reps), name
    assert "master_link_status:up" in cli(REDIS[1], "INFO", "replication")
