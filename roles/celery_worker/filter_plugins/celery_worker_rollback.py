"""What a health-gated rollback of a worker host needs (tasks/rollback.yml): the files the role
manages as they were before the run, what to write back and remove, and the message that ends
the run, naming what this run changed by the variable that feeds it.

tasks/snapshot.yml reads the managed files before the role changes anything (a find, then a
slurp of each: read-only, so a good run reports nothing changed); tasks/rollback.yml reads them
again when the host's nodes fail their health check, puts the snapshot back and quotes the
failing units' own last log lines.
"""

from __future__ import annotations

import base64
import re
import shlex
import tomllib
from collections.abc import Callable, Mapping, Sequence
from pathlib import PurePosixPath
from typing import Any

# The files the role writes, by name: the app's config, environment and Redis client
# certificate under /etc/APP, the unit template, each node's drop-in and the beat unit under
# /etc/systemd/system. A node's drop-in is node.conf; instance.conf was its name in earlier
# bundle releases, kept here so that a rollback of this release's first run puts it back.
MANAGED = re.compile(
    r".*/(config\.toml|celery\.env|tls/(ca\.crt|client\.crt|client\.key)|celery-worker@\.service"
    r"|celery-worker@[^/]+\.service\.d/(node|instance)\.conf|celery-beat\.service)"
)
BEAT = "celery-beat.service"
# A node's drop-in: its unit, its file name.
DROPIN = re.compile(r"/(celery-worker@[^/]+\.service)\.d/(node|instance)\.conf$")
# Values never quoted in a message (the run's output is read by people and kept in CI logs).
SECRET_KEYS = {"redis.password"}
# What systemctl show --property=ActiveState,SubState says of a node that serves.
SERVING = ["active", "running"]

# config.toml key -> the variable that writes it (templates/etc/app/config.toml.j2).
CONFIG_KEYS = {
    "redis.host": "celery_worker_redis_host",
    "redis.port": "celery_worker_redis_port",
    "redis.username": "celery_worker_redis_username",
    "redis.password": "celery_worker_redis_password",
    "redis.broker_db": "celery_worker_redis_broker_db",
    "redis.result_db": "celery_worker_redis_result_db",
    "redis.result_host": "celery_worker_redis_result_host",
    "redis.result_port": "celery_worker_redis_result_port",
    "redis.key_prefix": "celery_worker_redis_key_prefix",
    "redis.tls.enabled": "celery_worker_redis_tls",
    "celery.task_soft_time_limit": "celery_worker_soft_time_limit",
    "celery.task_time_limit": "celery_worker_time_limit",
    "celery.visibility_timeout": "celery_worker_visibility_timeout",
    "celery.result_expires": "celery_worker_result_expires",
    "celery.worker_prefetch_multiplier": "celery_worker_prefetch_multiplier",
    "celery.worker_soft_shutdown_timeout": "celery_worker_soft_shutdown_timeout",
    "celery.default_queue": "celery_worker_default_queue",
}
CONFIG_PREFIXES = {
    "redis.tls.": "celery_worker_redis_tls",
    "celery.task_routes.": "celery_worker_task_routes (or the app's own routes)",
    "celery.beat_schedule.": "celery_worker_beat_schedule",
}
# A node's drop-in (templates/.../node.conf.j2): celery worker flags and unit settings, each
# from a host-wide variable or the key of the same name in the node's celery_worker_instances
# entry.
NODE_SETTINGS = {
    "--pool": "pool",
    "--concurrency": "concurrency",
    "--autoscale": "autoscale",
    "--queues": "queues",
    "--prefetch-multiplier": "prefetch_multiplier",
    "--soft-time-limit": "soft_time_limit",
    "--time-limit": "time_limit",
    "--max-tasks-per-child": "max_tasks_per_child",
    "--max-memory-per-child": "max_memory_per_child_kb",
    "CELERY_CUSTOM_WORKER_POOL": "pool",
    "TimeoutStopSec": "timeout_stop_sec",
    "MemoryMax": "memory_max",
}
# Lines of the unit template that come from a variable; any other line is the role's own.
UNIT_KEYS = {
    "ExecStart --app": "celery_worker_app_module",
    "ExecStart --loglevel": "celery_worker_loglevel",
    "User": "celery_worker_app_name",
    "Group": "celery_worker_app_name",
    "Description": "celery_worker_app_name",
    "WorkingDirectory": "celery_worker_app_name",
    "EnvironmentFile": "celery_worker_app_name",
}


def celery_worker_snapshot(
    found: Mapping[str, Any], slurped: Mapping[str, Any]
) -> dict[str, dict[str, str]]:
    """The managed files from a find result and a slurp loop's result: path -> content, mode,
    owner, group."""
    stats = {f["path"]: f for f in found.get("files", [])}
    files: dict[str, dict[str, str]] = {}
    for result in slurped.get("results", []):
        if result.get("skipped") or "content" not in result:
            continue
        path = result["item"]
        stat = stats.get(path, {})
        files[path] = {
            "content": base64.b64decode(result["content"]).decode("utf-8", "replace"),
            "mode": stat.get("mode", "0644"),
            "owner": stat.get("pw_name", "root"),
            "group": stat.get("gr_name", "root"),
        }
    return files


def celery_worker_managed(found: Mapping[str, Any]) -> list[str]:
    """The paths of a find result that the role manages."""
    return sorted(f["path"] for f in found.get("files", []) if MANAGED.fullmatch(f["path"]))


def celery_worker_restore(
    before: Mapping[str, Mapping[str, str]],
    after: Mapping[str, Mapping[str, str]],
    states: Sequence[Mapping[str, Any]] = (),
    release_changed: bool = True,
) -> dict[str, list[Any]]:
    """What puts the host back: write (the earlier files that differ or went away), remove (files
    this run added: a new node's drop-in as its directory, an earlier node's renamed drop-in as
    the file), stop (the units this run added: new nodes, beat), restart (the earlier units: all
    of them when a file or the release goes back, else only the nodes that are down; states are
    systemctl show readings of this run's nodes), and earlier (every earlier unit, each checked
    once the host is back)."""
    write = [
        {"path": path, **entry}
        for path, entry in sorted(before.items())
        if after.get(path, {}).get("content") != entry["content"]
    ]
    added = sorted(set(after) - set(before))
    earlier = list(dict.fromkeys(unit for p in sorted(before) if (unit := _unit(p) or _beat(p))))
    # The units this run added (a node's drop-in, the beat unit); an earlier node whose drop-in
    # this run only renamed (instance.conf to node.conf) is not one of them.
    new_units = [
        unit
        for unit in dict.fromkeys(_unit(p) or _beat(p) for p in added)
        if unit and unit not in earlier
    ]
    down = {
        f"celery-worker@{s['item']['name']}.service"
        for s in states
        if s.get("stdout_lines") != SERVING
    }
    everything = bool(write or added or release_changed)
    remove = [_dropin_dir(p) if _unit(p) in new_units else p for p in added]
    return {
        "write": write,
        "remove": list(dict.fromkeys(remove)),
        "stop": new_units,
        "restart": [unit for unit in earlier if everything or unit in down],
        "earlier": earlier,
    }


def celery_worker_changes(
    before: Mapping[str, Mapping[str, str]],
    after: Mapping[str, Mapping[str, str]],
    release_before: str,
    release_after: str,
) -> list[str]:
    """What this run changed on the host, one line each, naming the variable that feeds it."""
    changes: list[str] = []
    if release_before != release_after:
        changes.append(
            f"release: {release_before or '(none)'} -> {release_after} (the app built from"
            " app_release_source_dir: its code, its pyproject.toml or its lock)"
        )
    renamed = _renamed_dropins(before, after)
    for path in sorted(set(before) | set(after)):
        if path in renamed.values():
            continue
        if path in renamed:
            new_path = renamed[path]
            changes.append(f"{path}: renamed {PurePosixPath(new_path).name} (a bundle upgrade)")
            was, now = before[path]["content"], after[new_path]["content"]
            if was != now:
                changes.extend(f"{new_path}: {line}" for line in _file_changes(new_path, was, now))
            continue
        old = before.get(path, {}).get("content")
        new = after.get(path, {}).get("content")
        if old == new:
            continue
        if old is None or new is None:
            what = "added" if old is None else "removed"
            feeds = (
                "celery_worker_instances"
                if _unit(path)
                else "celery_worker_beat"
                if _beat(path)
                else "celery_worker_redis_tls"
                if _tls(path)
                else "the role's templates"
            )
            changes.append(f"{path}: {what} ({feeds})")
            continue
        changes.extend(f"{path}: {line}" for line in _file_changes(path, old, new))
    return changes


def celery_worker_rollback_message(report: Mapping[str, Any]) -> str:
    """The message that fails the host, from tasks/rollback.yml's readings: what failed in its
    own words, what this run changed, and where the rollback left the host.

    report: host; changes (celery_worker_changes); states, logs (the systemctl show and
    journalctl loops over this run's nodes); failed_task, failed_msg (what the rescue caught);
    release (the earlier release, '' on a first deploy); checks (the earlier nodes' states after
    the rollback).
    """
    lines = [
        f"{report['host']}: the worker nodes did not pass their health check after this run's"
        " change."
    ]
    logs = {r["item"]["item"]["name"]: r.get("stdout_lines", []) for r in report["logs"]}
    failing = [r for r in report["states"] if r.get("stdout_lines") != SERVING]
    if not failing:
        lines.append(f"The step that failed: {report['failed_task']}: {report['failed_msg']}")
    for index, state in enumerate(failing):
        name = state["item"]["name"]
        status = "/".join(state.get("stdout_lines", []))
        if index:
            lines.append(f"celery-worker@{name}.service is {status} too.")
            continue
        lines.append(f"celery-worker@{name}.service is {status}; its log, up to its first failure:")
        lines.extend(f"    {line}" for line in first_failure(logs.get(name, [])))
    lines.append("What this run changed:")
    lines.extend(f"  - {change}" for change in report["changes"] or ["nothing the role manages"])
    units = [c["item"] for c in report["checks"] if not c.get("skipped")]
    not_serving = [
        c["item"]
        for c in report["checks"]
        if not c.get("skipped") and c.get("stdout_lines") != SERVING
    ]
    if not report["release"]:
        lines.append(
            "Nothing to roll back to (the host had no earlier release): it stays as it is."
        )
    elif not_serving:
        lines.append(
            f"Rolled back to release {report['release']} and the earlier configuration, but these"
            f" nodes still do not serve: {', '.join(not_serving)}."
        )
    else:
        lines.append(
            f"Rolled back: the host runs release {report['release']} with its earlier"
            f" configuration again, and {', '.join(units)} serve."
        )
    lines.append(
        "The run stops here: later hosts were not touched. Fix the inventory or the app, then"
        " run deploy.yml again (it applies the inventory's release and values)."
    )
    return "\n".join(lines)


# The lines systemd logs when a unit's start fails: its own words come just before.
FAILURE = re.compile(r"Main process exited|Failed with result|Failed to start|code=killed")


def first_failure(log: Sequence[str], lines: int = 15) -> list[str]:
    """The last lines of a unit's log (this run's) up to its first failure, systemd's own
    verdict included: later restart attempts repeat it, the first says it best."""
    for index, line in enumerate(log):
        if FAILURE.search(line):
            end = index + 1
            while end < len(log) and FAILURE.search(log[end]):
                end += 1
            return list(log[max(0, end - lines) : end])
    return list(log[-lines:]) or ["(nothing logged)"]


def _unit(path: str) -> str:
    """celery-worker@NODE.service for a node's drop-in, else ''."""
    match = DROPIN.search(path)
    return match.group(1) if match else ""


def _beat(path: str) -> str:
    """The beat unit's name for its unit file, else ''."""
    return BEAT if path.endswith(f"/{BEAT}") else ""


def _tls(path: str) -> bool:
    return "/tls/" in path


def _renamed_dropins(
    before: Mapping[str, Mapping[str, str]], after: Mapping[str, Mapping[str, str]]
) -> dict[str, str]:
    """An earlier release's instance.conf that this run replaced with the node's node.conf:
    the old path -> the new one."""
    renamed = {}
    for path in sorted(set(before) - set(after)):
        match = DROPIN.search(path)
        if match and match.group(2) == "instance":
            new_path = str(PurePosixPath(path).with_name("node.conf"))
            if new_path in after and new_path not in before:
                renamed[path] = new_path
    return renamed


def _dropin_dir(path: str) -> str:
    return str(PurePosixPath(path).parent) if _unit(path) else ""


def _file_changes(path: str, old: str, new: str) -> list[str]:
    if path.endswith("/config.toml"):
        return _keyed_changes(_toml(old), _toml(new), _config_variable)
    if _unit(path):
        return _keyed_changes(_dropin(old), _dropin(new), _node_variable)
    if _beat(path):
        return _keyed_changes(_unit_settings(old), _unit_settings(new), _beat_variable)
    if path.endswith(".service"):
        return _keyed_changes(_unit_settings(old), _unit_settings(new), _unit_variable)
    if _tls(path):
        # Never quoted: a key, or a certificate the certificates step (or a file variable) gave.
        return [
            "changed (the bundle's certificates step, or celery_worker_redis_tls_ca_cert_file,"
            " celery_worker_redis_tls_cert_file, celery_worker_redis_tls_key_file)"
        ]
    return ["changed (the role's environment template)"]


def _keyed_changes(
    old: Mapping[str, str], new: Mapping[str, str], variable: Callable[[str], str]
) -> list[str]:
    out = []
    for key in sorted(set(old) | set(new)):
        if old.get(key) == new.get(key):
            continue
        if key in SECRET_KEYS:
            out.append(f"{key} changed ({variable(key)})")
            continue
        out.append(
            f"{key}: {old.get(key, '(unset)')} -> {new.get(key, '(unset)')} ({variable(key)})"
        )
    return out or ["changed (the role's templates: comments or order)"]


def _toml(text: str) -> dict[str, str]:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        return {"(the whole file)": text}
    flat: dict[str, str] = {}

    def walk(prefix: str, node: object) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(f"{prefix}{key}.", value)
        else:
            flat[prefix[:-1]] = str(node)

    walk("", data)
    return flat


def _config_variable(key: str) -> str:
    if key in CONFIG_KEYS:
        return CONFIG_KEYS[key]
    for prefix, variable in CONFIG_PREFIXES.items():
        if key.startswith(prefix):
            return variable
    return "the role's config template"


def _dropin(text: str) -> dict[str, str]:
    settings: dict[str, str] = {}
    for line in _unit_lines(text).items():
        key, value = line
        if key == "Environment":
            for assignment in shlex.split(value):
                name, _, env_value = assignment.partition("=")
                if name == "WORKER_ARGS":
                    words = env_value.split()
                    for flag, arg in zip(words[::2], words[1::2], strict=False):
                        settings[flag] = arg
                else:
                    settings[name] = env_value
        else:
            settings[key] = value
    return settings


def _node_variable(key: str) -> str:
    name = NODE_SETTINGS.get(key)
    if not name:
        return "the role's drop-in template"
    host_wide = {"autoscale": "", "timeout_stop_sec": "celery_worker_timeout_stop_sec"}.get(
        name, f"celery_worker_{name}"
    )
    entry = f"{name} in the node's entry of celery_worker_instances"
    return f"{host_wide}, or {entry}" if host_wide else entry


def _unit_lines(text: str) -> dict[str, str]:
    """KEY=VALUE lines of a unit file (continuations joined; a repeated key keeps all values)."""
    joined = re.sub(r"\\\n\s*", " ", text)
    out: dict[str, str] = {}
    for line in joined.splitlines():
        if line.startswith(("#", "[")) or "=" not in line:
            continue
        key, _, value = line.partition("=")
        out[key] = f"{out[key]} {value}" if key in out else value
    return out


def _unit_settings(text: str) -> dict[str, str]:
    """A unit's lines, with ExecStart's --app and --loglevel as settings of their own."""
    settings = _unit_lines(text)
    words = iter(settings.pop("ExecStart", "").split())
    command = []
    for word in words:
        if word in ("--app", "--loglevel"):
            settings[f"ExecStart {word}"] = next(words, "")
        else:
            command.append(word)
    settings["ExecStart"] = " ".join(command)
    return settings


def _unit_variable(key: str) -> str:
    return UNIT_KEYS.get(key, "the role's unit template (a bundle upgrade)")


def _beat_variable(key: str) -> str:
    if key == "ExecStart --loglevel":
        return "celery_worker_beat_loglevel"
    return _unit_variable(key)


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {
            "celery_worker_snapshot": celery_worker_snapshot,
            "celery_worker_managed": celery_worker_managed,
            "celery_worker_restore": celery_worker_restore,
            "celery_worker_changes": celery_worker_changes,
            "celery_worker_rollback_message": celery_worker_rollback_message,
        }
