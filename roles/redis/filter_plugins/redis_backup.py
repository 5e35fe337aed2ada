"""Backups of a Redis host's servers and their restore (tasks/backup.yml, tasks/restore.yml).

A backup is a directory on the controller, redis_backup_dir/HOST/STAMP/, holding one RDB
snapshot per server (NAME.rdb), SHA256SUMS (in the form `sha256sum -c` reads) and backup.yml
(what each file holds: server, unit, Redis version, snapshot time, key count, as
redis-check-rdb read it on the host). A restore reads the same directory: every check here
runs on the controller before any host changes, and each message names the variable to fix.
"""

from __future__ import annotations

import datetime
import hashlib
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

SUMS = "SHA256SUMS"
RECORD = "backup.yml"
RESTORE_FROM = "redis_restore_from"
FORCE = "redis_restore_force"
# INFO keyspace: db0:keys=3,expires=0,avg_ttl=0
KEYSPACE = re.compile(r"^db\d+:keys=(\d+)", re.M)


def redis_info(text: str) -> dict[str, str]:
    """Filter: the fields of an INFO reply (`name:value` lines; section headers skipped)."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#") and ":" in line:
            name, value = line.split(":", 1)
            fields[name] = value
    return fields


def redis_info_keys(text: str) -> int:
    """Filter: the keys an INFO reply's keyspace section counts, over every database."""
    return sum(int(n) for n in KEYSPACE.findall(text))


def redis_bgsave_state(text: str, before: str) -> str:
    """Filter: INFO persistence now | redis_bgsave_state(INFO before the BGSAVE).

    `running` until a save has finished since BEFORE (rdb_saves counts them: LASTSAVE has
    one-second steps, so a save finishing in the second of the last one would not move it),
    `done` when it succeeded, else why it failed.
    """
    now, then = redis_info(text), redis_info(before)
    if now.get("rdb_bgsave_in_progress") == "1":
        return "running"
    if int(now.get("rdb_saves", "0")) <= int(then.get("rdb_saves", "0")):
        return "running"
    if now.get("rdb_last_bgsave_status") != "ok":
        return (
            f"the background save failed (rdb_last_bgsave_status "
            f"{now.get('rdb_last_bgsave_status', '?')}): see the server's journal"
        )
    return "done"


def redis_check_rdb(text: str) -> dict[str, Any]:
    """Filter: what redis-check-rdb says of a file (its version, creation time, keys)."""
    version = re.search(r"AUX FIELD redis-ver = '([^']*)'", text)
    ctime = re.search(r"AUX FIELD ctime = '(\d+)'", text)
    keys = re.search(r"^\[info\] (\d+) keys read", text, re.M)
    return {
        "ok": "RDB looks OK" in text,
        "redis_version": version.group(1) if version else "",
        "created": (
            datetime.datetime.fromtimestamp(int(ctime.group(1)), datetime.UTC).strftime(
                "%Y-%m-%dT%H:%M:%SZ"
            )
            if ctime
            else ""
        ),
        "keys": int(keys.group(1)) if keys else 0,
    }


def redis_backup_path(root: str, host: str, stamp: str) -> str:
    """Filter: redis_backup_dir | redis_backup_path(inventory_hostname, STAMP).

    The backup's own directory, absolute (a relative redis_backup_dir is taken from the
    directory ansible-playbook runs in, as the restore's redis_restore_from is).
    """
    return os.path.join(os.path.abspath(os.path.expanduser(root)), host, stamp)


def redis_backup_record(
    checks: Sequence[Mapping[str, Any]],
    stats: Sequence[Mapping[str, Any]],
    host: str,
    stamp: str,
) -> dict[str, Any]:
    """Filter: what backup.yml records, from the registered redis-check-rdb and stat results
    of each server's snapshot (in the order of __redis_servers, each with `redis__server`)."""
    taken = datetime.datetime.strptime(stamp, "%Y%m%dT%H%M%SZ")
    servers = []
    for check, stat in zip(checks, stats, strict=True):
        server = check["redis__server"]
        read = redis_check_rdb(check["stdout"])
        servers.append(
            {
                "name": server["name"],
                "unit": server["unit"],
                "file": f"{server['name']}.rdb",
                "sha256": stat["stat"]["checksum"],
                "size": stat["stat"]["size"],
                "redis_version": read["redis_version"],
                "created": read["created"],
                "keys": read["keys"],
                "appendonly": server["live"]["appendonly"] == "yes",
            }
        )
    return {"host": host, "taken": taken.strftime("%Y-%m-%dT%H:%M:%SZ"), "servers": servers}


def redis_backup_sums(record: Mapping[str, Any]) -> str:
    """Filter: SHA256SUMS for a backup.yml record, as `sha256sum -c` reads it."""
    return "".join(f"{s['sha256']}  {s['file']}\n" for s in record["servers"])


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _sums(text: str) -> dict[str, str]:
    sums: dict[str, str] = {}
    for line in text.splitlines():
        if line.strip():
            digest, _, name = line.partition("  ")
            sums[name.strip()] = digest.strip()
    return sums


def backup_errors(path: object, name: str = RESTORE_FROM) -> list[str]:
    """Why PATH is not a whole backup as tasks/backup.yml writes it, or nothing."""
    if not isinstance(path, str) or not path:
        return [
            f"{name} is not set: name the backup to restore, a directory that "
            f"playbooks/backup.yml wrote (-e {name}=backups/HOST/STAMP)"
        ]
    where = Path(path).expanduser().absolute()
    if not where.is_dir():
        return [f"{name}: {where} is not a directory: name one that playbooks/backup.yml wrote"]
    missing = [f for f in (RECORD, SUMS) if not (where / f).is_file()]
    if missing:
        return [
            f"{name}: {where} has no {' and no '.join(missing)}: it is not a backup written "
            "by playbooks/backup.yml"
        ]
    try:
        record = yaml.safe_load((where / RECORD).read_text())
        servers = list(record["servers"])
        files = {s["name"]: s["file"] for s in servers}
    except (yaml.YAMLError, KeyError, TypeError) as exc:
        return [f"{name}: {where / RECORD} cannot be read ({exc})"]
    if not servers:
        return [f"{name}: {where / RECORD} lists no server"]
    sums = _sums((where / SUMS).read_text())
    errors = []
    for server, file in files.items():
        if file not in sums:
            errors.append(f"{name}: {SUMS} in {where} has no line for {file} (server {server})")
        elif not (where / file).is_file():
            errors.append(f"{name}: {where / file} (server {server}) is missing")
        elif _sha256(where / file) != sums[file]:
            errors.append(
                f"{name}: {where / file} (server {server}) does not match its checksum in "
                f"{SUMS}: the copy is damaged; restore another backup"
            )
    return errors


def redis_backup_errors(path: object, name: str = RESTORE_FROM) -> list[str]:
    """Filter: redis_restore_from | redis_backup_errors: one message per problem, or none."""
    return backup_errors(path, name)


def redis_backup_read(path: str) -> dict[str, Any]:
    """Filter: the backup.yml of a backup that redis_backup_errors found whole, with each
    server's file as an absolute path (src)."""
    where = Path(path).expanduser().absolute()
    record = dict(yaml.safe_load((where / RECORD).read_text()))
    record["dir"] = str(where)
    record["servers"] = [dict(s, src=str(where / s["file"])) for s in record["servers"]]
    return record


def redis_restore_refusals(
    backup: Mapping[str, Any],
    servers: Sequence[Mapping[str, Any]],
    probes: Sequence[Mapping[str, Any]],
    force: object,
) -> list[str]:
    """Filter: why the backup must not replace this host's data, or nothing.

    SERVERS: the host's servers (vars/main.yml's __redis_servers). PROBES: one registered
    INFO result per server, with the server as `redis__server`. A server the backup holds and
    the host does not run stops the restore whatever FORCE says; one that holds keys, or does
    not answer, stops it unless FORCE.
    """
    run = {s["name"] for s in servers}
    # Only the results server is optional (redis_results_server).
    errors = [
        f"{RESTORE_FROM}: the backup holds server {s['name']}, which this host does not run: "
        f"set redis_{s['name']}_server: true and deploy first"
        for s in backup["servers"]
        if s["name"] not in run
    ]
    if force is True:
        return errors
    wanted = {s["name"] for s in backup["servers"]}
    for probe in probes:
        server = probe["redis__server"]
        if server["name"] not in wanted:
            continue
        if probe.get("rc", 1) != 0 or "redis_version:" not in probe.get("stdout", ""):
            errors.append(
                f"server {server['name']} ({server['unit']}) does not answer, so what it holds "
                f"is unknown: deploy the host first (deploy.yml --limit HOST), or set "
                f"-e {FORCE}=true to restore anyway"
            )
            continue
        keys = redis_info_keys(probe["stdout"])
        if keys:
            errors.append(
                f"server {server['name']} ({server['unit']}) holds {keys} keys, which the "
                f"restore would replace: restore onto a new or rebuilt server (stop the workers, "
                f"beat and producers first: they write to an empty broker too), or set "
                f"-e {FORCE}=true to move its data aside and restore"
            )
    return errors


def redis_restore_pairs(
    servers: Sequence[Mapping[str, Any]], backup: Mapping[str, Any]
) -> list[dict[str, Any]]:
    """Filter: __redis_servers | redis_restore_pairs(backup): each server the backup holds,
    as {server: this host's, backup: the backup's entry}, in the host's order."""
    held = {s["name"]: s for s in backup["servers"]}
    return [{"server": s, "backup": held[s["name"]]} for s in servers if s["name"] in held]


def redis_restore_loaded(text: str, keys: int) -> str:
    """Filter: INFO of a restored server | redis_restore_loaded(keys in the backup).

    `loading` while it loads, `ok` once it loaded every key of the backup (those expired
    since count as loaded), else what it loaded.
    """
    info = redis_info(text)
    if "redis_version" not in info or info.get("loading") == "1":
        return "loading"
    loaded = int(info.get("rdb_last_load_keys_loaded", "0"))
    expired = int(info.get("rdb_last_load_keys_expired", "0"))
    if loaded + expired == int(keys):
        return "ok"
    return f"it loaded {loaded} keys ({expired} expired) where the backup holds {keys}"


def redis_aof_manifest(appendfilename: str) -> str:
    """Filter: the manifest of an append-only directory whose only file is an RDB base.

    Redis 7 with appendonly yes loads its append-only directory and never dump.rdb (with no
    directory it starts empty and writes one), so a restored RDB goes in as the base file
    Redis itself writes with aof-use-rdb-preamble; Redis opens a new incr file after it.
    """
    return f"file {appendfilename}.1.base.rdb seq 1 type b\n"


class FilterModule:
    """Backups and restores of the host's Redis servers."""

    def filters(self) -> dict[str, Any]:
        return {
            "redis_info": redis_info,
            "redis_info_keys": redis_info_keys,
            "redis_bgsave_state": redis_bgsave_state,
            "redis_check_rdb": redis_check_rdb,
            "redis_backup_path": redis_backup_path,
            "redis_backup_record": redis_backup_record,
            "redis_backup_sums": redis_backup_sums,
            "redis_backup_errors": redis_backup_errors,
            "redis_backup_read": redis_backup_read,
            "redis_restore_refusals": redis_restore_refusals,
            "redis_restore_pairs": redis_restore_pairs,
            "redis_restore_loaded": redis_restore_loaded,
            "redis_aof_manifest": redis_aof_manifest,
        }
