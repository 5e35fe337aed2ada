"""Backup and restore, as the README's Backups section runs them: queued tasks and stored results
survive a backup, a rebuilt Redis host and a restore, and then run; a damaged copy, and a
server that holds data, are refused before any host changes."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml
from celery import Celery
from conftest import CONTROLLER_PORT, REPO, SPARE, WORKERS, assert_ok, deploy, on

from rcbundle.config import celery_config, load_settings

REDIS = "mol-cluster-redis1"
QUEUED = 40
TIMEOUT = 120


def active_units(host: str) -> list[str]:
    """The host's worker nodes and beat that are running now."""
    # Patterns match whole unit names: celery-beat alone would match nothing.
    units = "'celery-worker@*' celery-beat.service"
    out = on(host, f"systemctl list-units --plain --no-legend --state=active {units}")
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def redis_run(host: str = REDIS) -> str:
    """The broker's unit invocation: it changes whenever redis-server (re)starts."""
    return on(host, "systemctl show -p InvocationID --value redis-server").strip()


def broker(db: int = 0) -> redis.Redis:
    """The broker through the published port, with the lab's throwaway password."""
    vault = REPO / "inventories/lab/group_vars/all/vault.yml"
    password = str(yaml.safe_load(vault.read_text())["vault_redis_password"])
    return redis.Redis(port=CONTROLLER_PORT, password=password, db=db)


def keys() -> list[str]:
    """The keys the broker holds, over every database."""
    found = []
    for db in range(16):
        with broker(db) as client:
            found += [f"{db}:{key!r}" for key in client.scan_iter(count=1000)]
    return found


def info(section: str) -> dict[str, Any]:
    with broker() as client:
        return dict(client.info(section))


def producer(config: Path) -> Celery:
    """A plain Celery producer and result reader of its own: closed before Redis goes away, so
    nothing on the controller writes to the rebuilt server before the restore."""
    return Celery("backup-restore", config_source=celery_config(load_settings(config)))


@pytest.fixture
def fleet_stopped() -> Iterator[None]:
    """Every worker node and beat stopped (tasks stay queued), started again afterwards."""
    units = {h: active_units(h) for h in [*WORKERS, SPARE]}
    for host, names in units.items():
        if names:
            on(host, f"systemctl stop {' '.join(names)}", timeout=180)
    try:
        yield
    finally:
        for host, names in units.items():
            if names:
                on(host, f"systemctl start {' '.join(names)}", timeout=180)


def restore(path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return deploy("playbooks/restore.yml", "-e", f"redis_restore_from={path}", *args, timeout=300)


@pytest.mark.usefixtures("fleet_stopped")
def test_queued_tasks_and_results_survive_backup_rebuild_and_restore(
    controller_config: Path, tmp_path: Path
) -> None:
    # Results stored before the backup: the fleet is stopped, so run them first on worker1's
    # cpu node, started for them alone.
    client = producer(controller_config)
    try:
        on(WORKERS[0], "systemctl start celery-worker@cpu", timeout=180)
        done = [client.send_task("taskapp.process_data", args=([n, 2.0],)) for n in range(3)]
        stored = {r.id: r.get(timeout=TIMEOUT) for r in done}
        on(WORKERS[0], "systemctl stop celery-worker@cpu", timeout=180)
        sent = [client.send_task("taskapp.process_data", args=([n, 1.0],)) for n in range(QUEUED)]
        queued = [r.id for r in sent]
    finally:
        client.close()

    proc = deploy("playbooks/backup.yml", "-e", f"redis_backup_dir={tmp_path}", timeout=300)
    assert_ok(proc)
    (backup,) = (tmp_path / REDIS).iterdir()
    subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=backup, check=True, capture_output=True)
    record = yaml.safe_load((backup / "backup.yml").read_text())
    assert record["host"] == REDIS
    assert [s["name"] for s in record["servers"]] == ["main"]
    assert record["servers"][0]["keys"] >= 2  # the queue and the stored results, at least

    # A rebuilt host: Redis purged with its data and configuration, then deployed again.
    on(REDIS, "systemctl stop redis-server && apt-get purge -y -q redis-server redis-tools "
              "&& rm -rf /var/lib/redis /etc/redis", timeout=300)  # fmt: skip
    assert_ok(deploy("deploy.yml", "--limit", REDIS))
    assert keys() == []

    # A damaged copy stops the run before the host changes.
    damaged = tmp_path / "damaged"
    shutil.copytree(backup, damaged)
    data = bytearray((damaged / "main.rdb").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (damaged / "main.rdb").write_bytes(bytes(data))
    before = redis_run()
    proc = restore(damaged)
    assert proc.returncode != 0
    assert "redis_restore_from" in proc.stdout
    assert "does not match its checksum in SHA256SUMS" in proc.stdout, proc.stdout[-3000:]
    assert redis_run() == before

    # --check says what it would do and changes nothing.
    proc = restore(backup, "--check")
    assert_ok(proc)
    assert "Would restore server main" in proc.stdout, proc.stdout[-3000:]
    assert redis_run() == before
    assert keys() == []

    proc = restore(backup)
    assert_ok(proc)
    assert "Restored main" in proc.stdout, proc.stdout[-3000:]
    assert redis_run() != before
    # Every key of the backup loaded (keys whose TTL ran out since are counted by Redis as
    # expired at load, or expire after it: counting keys now would be off by those).
    loaded = info("persistence")
    total = loaded["rdb_last_load_keys_loaded"] + loaded["rdb_last_load_keys_expired"]
    assert total == record["servers"][0]["keys"]
    # What the rebuilt server held was moved aside, not deleted.
    assert on(REDIS, "ls -d /var/lib/redis/before-restore-*/appendonlydir").strip()

    # Now it holds data: a second restore is refused, naming the variable that forces it.
    proc = restore(backup)
    assert proc.returncode != 0
    assert "holds" in proc.stdout
    assert "redis_restore_force=true" in proc.stdout, proc.stdout[-3000:]

    # The restored queue runs once the workers are back, and the stored results are readable.
    on(WORKERS[0], "systemctl start celery-worker@cpu", timeout=180)
    client = producer(controller_config)
    try:
        deadline = time.monotonic() + TIMEOUT
        for task_id in queued:
            assert client.AsyncResult(task_id).get(timeout=max(1.0, deadline - time.monotonic()))
        for task_id, value in stored.items():
            assert client.AsyncResult(task_id).get(timeout=TIMEOUT) == value
    finally:
        client.close()
