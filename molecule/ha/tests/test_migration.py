"""Growing from one Redis host to three by editing the inventory (`make chaos-ha`, on hosts
Molecule created but did not converge): the group's first host deployed alone, as a single
host (no Sentinel, the workers on a plain URL); tasks queued on it while the workers are
stopped; then the inventory lists the three hosts, the first one first, and the same deploy
turns it into the master of a replicated group. The queued tasks are kept and run, and the
first host keeps its data as the master."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import (
    REDIS,
    WORKER,
    cli,
    deploy,
    finish_stream,
    master,
    on,
    one_host_inventory,
    produce,
    start_stream,
    wait_for,
)

from testkit import playbook

pytestmark = pytest.mark.experiment

QUEUED_SECONDS = 5  # the stream's length while no worker runs: about 50 tasks
QUEUE = "taskapp:celery"  # the broker's default queue under the key prefix


def test_a_single_host_grows_into_a_group_and_keeps_its_queued_tasks(tmp_path: Path) -> None:
    single = playbook("deploy.yml", one_host_inventory(tmp_path), timeout=1200)
    assert single.returncode == 0, single.stdout[-4000:]
    assert cli(REDIS[0], "ROLE").startswith("master")
    assert not on(REDIS[0]).service("redis-sentinel").is_running
    assert "sentinel" not in on(WORKER).file("/etc/taskapp/config.toml").content_string

    on(WORKER).run("systemctl stop 'celery-worker@*'")
    label, out = start_stream(QUEUED_SECONDS)
    wait_for("the queued stream's end", lambda: on(WORKER).file(out).exists, 60)
    queued = int(cli(REDIS[0], "LLEN", QUEUE).splitlines()[-1])
    assert queued > 0

    grown = deploy()
    assert grown.returncode == 0, grown.stdout[-4000:]
    assert master() == REDIS[0]  # the first host stays the master, with its data
    for host in REDIS[1:]:
        wait_for(
            f"{host} linked to the master",
            lambda host=host: "master_link_status:up" in cli(host, "INFO", "replication"),
            60,
        )
    figures = finish_stream(label, out, QUEUED_SECONDS, 0)
    print(f"migration: {queued} queued; {figures}")
    assert figures["sends_refused"] == 0, figures
    assert figures["tasks_lost"] == 0, figures
    assert figures["tasks_accepted"] >= queued
    assert produce(5)["done"] == 5  # and a user's producer through the Sentinels
