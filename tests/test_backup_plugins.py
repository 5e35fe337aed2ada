"""Backups and restores (roles/redis/filter_plugins/redis_backup.py): when a save has finished,
what backup.yml and SHA256SUMS hold, each refusal a restore makes with its message, and, against
a real redis-server on loopback (Debian 12's 7.0.15 here, as on the hosts), that a snapshot put
in place as the restore does is loaded with appendonly yes, where a dump.rdb alone is not."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml
from conftest import REPO

from testkit.loopback import free_port, stop, wait_until

sys.path.insert(0, str(REPO / "roles/redis/filter_plugins"))
import redis_backup as rb  # the role's plugin, not an installed module

MAIN = {
    "name": "main",
    "unit": "redis-server",
    "port": 6379,
    "dbfilename": "dump.rdb",
    "appenddirname": "appendonlydir",
    "live": {"appendonly": "yes"},
}
RESULTS = {
    "name": "results",
    "unit": "redis-server@results",
    "port": 6380,
    "dbfilename": "dump-results.rdb",
    "appenddirname": "appendonlydir-results",
    "live": {"appendonly": "no"},
}
CHECK_RDB = """[offset 0] Checking RDB file /var/lib/redis/dump.rdb.backup
[offset 27] AUX FIELD redis-ver = '7.0.15'
[offset 53] AUX FIELD ctime = '1796597767'
[offset 113] Checksum OK
[offset 113] \\o/ RDB looks OK! \\o/
[info] 12 keys read
[info] 1 expires
[info] 0 already expired
"""


def info(**fields: object) -> str:
    return "# Persistence\r\n" + "".join(f"{k}:{v}\r\n" for k, v in fields.items())


def test_info_fields_and_keys() -> None:
    text = (
        "# Server\r\nredis_version:7.0.15\r\n\r\n# Keyspace\r\ndb0:keys=3,expires=1,avg_ttl=9\r\n"
    )
    text += "db2:keys=4,expires=0,avg_ttl=0\r\n"
    assert rb.redis_info(text)["redis_version"] == "7.0.15"
    assert rb.redis_info_keys(text) == 7
    assert rb.redis_info_keys("# Keyspace\r\n") == 0


def test_a_save_is_done_only_once_counted_finished_and_ok() -> None:
    before = info(rdb_bgsave_in_progress=0, rdb_saves=4, rdb_last_bgsave_status="ok")
    # LASTSAVE may not move (a save within the second of the last one): rdb_saves does.
    assert rb.redis_bgsave_state(before, before) == "running"
    running = info(rdb_bgsave_in_progress=1, rdb_saves=4, rdb_last_bgsave_status="ok")
    assert rb.redis_bgsave_state(running, before) == "running"
    done = info(rdb_bgsave_in_progress=0, rdb_saves=5, rdb_last_bgsave_status="ok")
    assert rb.redis_bgsave_state(done, before) == "done"
    failed = info(rdb_bgsave_in_progress=0, rdb_saves=5, rdb_last_bgsave_status="err")
    assert "rdb_last_bgsave_status err" in rb.redis_bgsave_state(failed, before)


def test_check_rdb_reads_version_time_and_keys() -> None:
    read = rb.redis_check_rdb(CHECK_RDB)
    assert read == {
        "ok": True,
        "redis_version": "7.0.15",
        "created": "2026-12-06T22:56:07Z",
        "keys": 12,
    }
    assert not rb.redis_check_rdb("--- RDB ERROR DETECTED ---\n[info] 1 keys read\n")["ok"]


def test_backup_path_is_absolute_under_the_host_and_stamp() -> None:
    path = rb.redis_backup_path("backups", "redis1", "20261206T225607Z")
    assert Path(path) == Path.cwd() / "backups/redis1/20261206T225607Z"
    assert rb.redis_backup_path("/srv/b", "r", "S") == "/srv/b/r/S"


def record(sha: str = "ab" * 32) -> dict[str, Any]:
    checks = [{"redis__server": MAIN, "stdout": CHECK_RDB}]
    stats = [{"redis__server": MAIN, "stat": {"checksum": sha, "size": 113}}]
    return rb.redis_backup_record(checks, stats, "redis1", "20261206T225610Z")


def test_record_and_sums() -> None:
    rec = record()
    assert rec["host"] == "redis1"
    assert rec["taken"] == "2026-12-06T22:56:10Z"
    (server,) = rec["servers"]
    assert server["file"] == "main.rdb"
    assert server["keys"] == 12
    assert server["appendonly"] is True
    assert server["redis_version"] == "7.0.15"
    assert rb.redis_backup_sums(rec) == f"{'ab' * 32}  main.rdb\n"


def write_backup(where: Path, content: bytes = b"REDIS0010 snapshot") -> Path:
    where.mkdir(parents=True, exist_ok=True)
    (where / "main.rdb").write_bytes(content)
    sha = subprocess.run(
        ["sha256sum", "main.rdb"], cwd=where, capture_output=True, text=True, check=True
    ).stdout.split()[0]
    rec = record(sha)
    (where / "backup.yml").write_text(yaml.safe_dump(rec))
    (where / "SHA256SUMS").write_text(rb.redis_backup_sums(rec))
    return where


def test_a_whole_backup_passes_and_sha256sum_agrees(tmp_path: Path) -> None:
    where = write_backup(tmp_path / "b")
    assert rb.redis_backup_errors(str(where)) == []
    subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=where, check=True, capture_output=True)
    read = rb.redis_backup_read(str(where))
    assert read["dir"] == str(where)
    assert read["servers"][0]["src"] == str(where / "main.rdb")


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("unset", "redis_restore_from is not set: name the backup to restore"),
        ("nowhere", "is not a directory: name one that playbooks/backup.yml wrote"),
        ("no-sums", "has no SHA256SUMS: it is not a backup written by playbooks/backup.yml"),
        ("no-file", "main.rdb (server main) is missing"),
        ("no-line", "SHA256SUMS in"),
        ("flipped", "does not match its checksum in SHA256SUMS: the copy is damaged"),
    ],
)
def test_a_damaged_backup_is_refused_naming_the_variable(
    tmp_path: Path, damage: str, message: str
) -> None:
    where = write_backup(tmp_path / "b")
    path: object = str(where)
    if damage == "unset":
        path = ""
    elif damage == "nowhere":
        path = str(tmp_path / "missing")
    elif damage == "no-sums":
        (where / "SHA256SUMS").unlink()
    elif damage == "no-file":
        (where / "main.rdb").unlink()
    elif damage == "no-line":
        (where / "SHA256SUMS").write_text("")
    else:
        data = bytearray((where / "main.rdb").read_bytes())
        data[-1] ^= 1
        (where / "main.rdb").write_bytes(bytes(data))
    errors = rb.redis_backup_errors(path)
    assert len(errors) == 1
    assert errors[0].startswith("redis_restore_from")
    assert message in errors[0]


def probe(server: dict[str, Any], keys: int | None) -> dict[str, Any]:
    if keys is None:
        return {"redis__server": server, "rc": 1, "stdout": ""}
    space = f"db0:keys={keys},expires=0,avg_ttl=0\r\n" if keys else ""
    return {"redis__server": server, "rc": 0, "stdout": f"redis_version:7.0.15\r\n{space}"}


def test_restore_refuses_a_server_that_holds_keys_unless_forced() -> None:
    backup = {"servers": [{"name": "main"}]}
    assert rb.redis_restore_refusals(backup, [MAIN], [probe(MAIN, 0)], False) == []
    (refusal,) = rb.redis_restore_refusals(backup, [MAIN], [probe(MAIN, 5)], False)
    assert "server main (redis-server) holds 5 keys" in refusal
    assert "-e redis_restore_force=true" in refusal
    assert rb.redis_restore_refusals(backup, [MAIN], [probe(MAIN, 5)], True) == []


def test_restore_refuses_a_server_that_does_not_answer_unless_forced() -> None:
    backup = {"servers": [{"name": "main"}]}
    (refusal,) = rb.redis_restore_refusals(backup, [MAIN], [probe(MAIN, None)], False)
    assert "does not answer" in refusal
    assert "deploy the host first" in refusal
    assert rb.redis_restore_refusals(backup, [MAIN], [probe(MAIN, None)], True) == []


def test_restore_refuses_a_server_the_host_does_not_run_even_forced() -> None:
    backup = {"servers": [{"name": "main"}, {"name": "results"}]}
    for force in (False, True):
        (refusal,) = rb.redis_restore_refusals(backup, [MAIN], [probe(MAIN, 0)], force)
        assert "holds server results, which this host does not run" in refusal
        assert "redis_results_server: true" in refusal


def test_restore_leaves_servers_the_backup_does_not_hold() -> None:
    backup = {"servers": [{"name": "main"}]}
    probes = [probe(MAIN, 0), probe(RESULTS, 40)]
    assert rb.redis_restore_refusals(backup, [MAIN, RESULTS], probes, False) == []
    pairs = rb.redis_restore_pairs([MAIN, RESULTS], backup)
    assert [p["server"]["name"] for p in pairs] == ["main"]


def test_loaded_counts_expired_keys_as_loaded() -> None:
    loaded = "redis_version:7.0.15\r\nloading:0\r\nrdb_last_load_keys_loaded:{}\r\n"
    loaded += "rdb_last_load_keys_expired:{}\r\n"
    assert rb.redis_restore_loaded(loaded.format(10, 2), 12) == "ok"
    assert rb.redis_restore_loaded("redis_version:7\r\nloading:1\r\n", 12) == "loading"
    assert rb.redis_restore_loaded("", 12) == "loading"
    assert "loaded 0 keys" in rb.redis_restore_loaded(loaded.format(0, 0), 12)


@contextlib.contextmanager
def server(workdir: Path, *args: str) -> Iterator[redis.Redis]:
    """A redis-server on loopback in WORKDIR, with the role's persistence file names."""
    port = free_port()
    log = workdir / "redis.log"
    argv = ["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--dir", str(workdir)]
    argv += ["--save", "", "--appendfilename", "appendonly.aof", "--logfile", str(log), *args]
    client = redis.Redis(port=port, decode_responses=True)

    def answers() -> bool:
        try:
            return bool(client.ping())
        except redis.ConnectionError:
            return False

    proc = subprocess.Popen(argv, start_new_session=True)
    try:
        wait_until("redis-server", answers, proc, log)
        yield client
    finally:
        stop(proc, timeout=10)


def raw_info(client: redis.Redis, section: str = "default") -> str:
    """INFO as the role reads it: redis-cli's text (redis-py would parse it)."""
    port = str(client.connection_pool.connection_kwargs["port"])
    argv = ["redis-cli", "-p", port, "INFO", section]
    return subprocess.run(argv, capture_output=True, text=True, check=True).stdout


def test_a_snapshot_put_in_place_as_the_restore_does_loads_with_appendonly(
    tmp_path: Path,
) -> None:
    source = tmp_path / "source"
    source.mkdir()
    with server(source, "--appendonly", "yes") as client:
        client.rpush("celery", *[f"task-{n}" for n in range(50)])
        client.set("celery-task-meta-1", "result", ex=3600)
        before = raw_info(client, "persistence")
        assert client.bgsave(schedule=True)
        deadline = time.monotonic() + 30
        while rb.redis_bgsave_state(raw_info(client, "persistence"), before) == "running":
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert rb.redis_bgsave_state(raw_info(client, "persistence"), before) == "done"
    checked = subprocess.run(
        ["redis-check-rdb", str(source / "dump.rdb")], capture_output=True, text=True, check=False
    ).stdout
    read = rb.redis_check_rdb(checked)
    assert read["ok"]
    assert read["keys"] == 2

    # Redis 7 with appendonly yes never loads dump.rdb: with no append-only directory it starts
    # empty (this is why the restore writes the directory; it fails the day Redis changes).
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "dump.rdb").write_bytes((source / "dump.rdb").read_bytes())
    with server(bare, "--appendonly", "yes") as client:
        assert client.dbsize() == 0

    # As tasks/restore.yml lays it out: the snapshot as the directory's RDB base, its manifest.
    target = tmp_path / "target"
    (target / "appendonlydir").mkdir(parents=True)
    base = target / "appendonlydir/appendonly.aof.1.base.rdb"
    base.write_bytes((source / "dump.rdb").read_bytes())
    (target / "appendonlydir/appendonly.aof.manifest").write_text(
        rb.redis_aof_manifest("appendonly.aof")
    )
    with server(target, "--appendonly", "yes") as client:
        assert rb.redis_restore_loaded(raw_info(client), read["keys"]) == "ok"
        assert client.llen("celery") == 50
        assert client.get("celery-task-meta-1") == "result"
        client.rpush("celery", "after")
    # What the server wrote after the restore survives a restart: Redis kept the base and
    # opened a new incr file after it.
    with server(target, "--appendonly", "yes") as client:
        assert client.llen("celery") == 51

    # With appendonly no the restore writes the dump: Redis loads it.
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "dump.rdb").write_bytes((source / "dump.rdb").read_bytes())
    with server(plain, "--appendonly", "no") as client:
        assert rb.redis_restore_loaded(raw_info(client), read["keys"]) == "ok"
        assert client.llen("celery") == 50
