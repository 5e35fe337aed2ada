"""What a rollback of a Redis host needs (tasks/rollback.yml): the files the role manages as they
were before the run, which servers to restart once they are back, where to ask each one for
a PONG, and the message that ends the run, naming the variable behind each changed setting.

tasks/snapshot.yml reads the files before the role changes anything (read-only: a good run
reports nothing changed). A change Redis refuses (a restart that does not come back: an address
it cannot bind, a setting it rejects) lands in tasks/rollback.yml.
"""

from __future__ import annotations

import base64
import re
import shlex
from collections.abc import Mapping, Sequence
from typing import Any

MANAGED = re.compile(
    r"/etc/redis/(redis(-results)?(-live)?\.conf|users\.acl|tls/(ca\.crt|redis\.crt|redis\.key))"
    r"|/etc/systemd/system/redis-server(@results)?\.service\.d/bundle\.conf"
)
# The certificate, key and CA every server reads (tasks/tls.yml): never quoted.
TLS_DIR = "/etc/redis/tls/"
# The servers (vars/main.yml's __redis_main and __redis_results): unit, config files.
SERVERS = {
    "redis-server": ("/etc/redis/redis.conf", "/etc/redis/redis-live.conf", ""),
    "redis-server@results": (
        "/etc/redis/redis-results.conf",
        "/etc/redis/redis-results-live.conf",
        "results_",
    ),
}
# redis.conf directive -> the variable after redis_ (redis_results_ for the results
# server's own settings, marked with *) that writes it.
DIRECTIVES = {
    "bind": "bind",
    "port": "*port",
    "tls-port": "*port",
    "tls-auth-clients": "tls_auth_clients",
    "tls-protocols": "tls_protocols",
    "tcp-backlog": "tcp_backlog",
    "databases": "databases",
    "aclfile": "auth_mode",
    "requirepass": "password",
    "masteruser": "acl_replication_user",
    "masterauth": "acl_replication_password",
    "maxclients": "maxclients",
    "maxmemory": "*maxmemory_mb (or redis_*maxmemory_percent)",
    "maxmemory-policy": "*maxmemory_policy",
    "appendonly": "*persistence",
    "save": "save_points (or redis_*persistence)",
    "notify-keyspace-events": "notify_keyspace_events",
    "appendfsync": "appendfsync",
    "loglevel": "loglevel",
    "tcp-keepalive": "tcp_keepalive",
    "LimitNOFILE": "maxclients",
}
SECRETS = {"requirepass", "masterauth", "user"}


def redis_snapshot(found: Mapping[str, Any], slurped: Mapping[str, Any]) -> dict[str, Any]:
    """The managed files from a find result and a slurp loop's: path -> content, mode, owner,
    group."""
    stats = {f["path"]: f for f in found.get("files", [])}
    files = {}
    for result in slurped.get("results", []):
        if result.get("skipped") or "content" not in result:
            continue
        stat = stats.get(result["item"], {})
        files[result["item"]] = {
            "content": base64.b64decode(result["content"]).decode("utf-8", "replace"),
            "mode": stat.get("mode", "0640"),
            "owner": stat.get("pw_name", "root"),
            "group": stat.get("gr_name", "root"),
        }
    return files


def redis_managed(found: Mapping[str, Any]) -> list[str]:
    """The paths of a find result that the role manages."""
    return sorted(f["path"] for f in found.get("files", []) if MANAGED.fullmatch(f["path"]))


def redis_restore(
    before: Mapping[str, Mapping[str, str]],
    after: Mapping[str, Mapping[str, str]],
    states: Sequence[Mapping[str, Any]],
    loaded: bool = True,
) -> dict[str, Any]:
    """write: the earlier files that differ now; restart: the servers that are down, and those
    whose files change back when they may have loaded this run's (LOADED: a single host's
    handlers restart at once; in a replicated group, only a server that restarted in its turn
    did), and those whose live settings change back (the handlers set them on every server);
    probe: each of those with the address and port its earlier configuration listens
    on."""
    write = [
        {"path": path, **entry}
        for path, entry in sorted(before.items())
        if after.get(path, {}).get("content") != entry["content"]
    ]
    written = {entry["path"] for entry in write}
    down = {s["item"]["unit"] for s in states if s.get("stdout_lines") != ["active", "running"]}
    restart = []
    for unit, (config, live, _) in SERVERS.items():
        dropin = f"/etc/systemd/system/{unit}.service.d/bundle.conf"
        tls = any(path.startswith(TLS_DIR) for path in written)
        changed_back = tls or bool({config, live, dropin} & written)
        if config in before and (unit in down or live in written or (loaded and changed_back)):
            restart.append(unit)
    return {
        "write": write,
        "restart": restart,
        "probe": [
            {"unit": unit, **_listens(before[SERVERS[unit][0]]["content"])} for unit in restart
        ],
    }


def redis_changes(
    before: Mapping[str, Mapping[str, str]], after: Mapping[str, Mapping[str, str]]
) -> list[str]:
    """What this run changed, one line per setting, naming the variable that writes it."""
    changes = []
    for path in sorted(set(before) | set(after)):
        if path.startswith(TLS_DIR):
            if before.get(path, {}).get("content") != after.get(path, {}).get("content"):
                changes.append(
                    f"{path}: changed (the bundle's certificates step, or redis_tls_ca_cert_file,"
                    " redis_tls_cert_file, redis_tls_key_file)"
                )
            continue
        old = _directives(before.get(path, {}).get("content", ""))
        new = _directives(after.get(path, {}).get("content", ""))
        results = "results" in path
        for key in sorted(set(old) | set(new)):
            if old.get(key) == new.get(key):
                continue
            variable = _variable(key, results)
            if key in SECRETS or path.endswith("users.acl"):
                changes.append(f"{path}: {key} changed ({variable})")
            else:
                was, now = old.get(key, "(unset)"), new.get(key, "(unset)")
                changes.append(f"{path}: {key} {was} -> {now} ({variable})")
    return changes


def redis_rollback_message(report: Mapping[str, Any]) -> str:
    """The message that fails the host: Redis's own last log lines, what changed, and whether
    the restored configuration answers.

    report: host; changes (redis_changes); logs (the journalctl loop over the servers that
    did not come back); failed_task, failed_msg; checks (the PING loop after the rollback).
    """
    lines = [f"{report['host']}: Redis did not take this run's change."]
    for log in report["logs"]:
        unit = log["item"]["item"]["unit"]
        state = "/".join(log["item"].get("stdout_lines", []))
        lines.append(f"{unit} is {state}; its log, up to its first failure:")
        lines.extend(f"    {line}" for line in first_failure(log.get("stdout_lines", [])))
    if not report["logs"]:
        lines.append(f"The step that failed: {report['failed_task']}: {report['failed_msg']}")
    lines.append("What this run changed:")
    lines.extend(f"  - {change}" for change in report["changes"] or ["nothing the role manages"])
    checks = [c for c in report["checks"] if not c.get("skipped")]
    silent = [c["item"]["unit"] for c in checks if not _answered(c.get("stdout", ""))]
    if silent:
        lines.append(
            f"The earlier configuration is back, but these do not answer: {', '.join(silent)}."
        )
    else:
        restarted = ", ".join(c["item"]["unit"] for c in checks) or "no server needed a restart"
        lines.append(f"Rolled back: the earlier configuration is back and answers ({restarted}).")
    lines.append(
        "The run stops here: the workers were not touched. Fix the inventory, then run"
        " deploy.yml again."
    )
    return "\n".join(lines)


# The lines systemd logs when a unit's start fails: Redis's own words come just before.
FAILURE = re.compile(r"Main process exited|Failed with result|Failed to start|code=killed")


def first_failure(log: list[str], lines: int = 15) -> list[str]:
    """The last lines of a unit's log (this run's) up to its first failure, systemd's own
    verdict included: later restart attempts repeat it, the first says it best."""
    for index, line in enumerate(log):
        if FAILURE.search(line):
            end = index + 1
            while end < len(log) and FAILURE.search(log[end]):
                end += 1
            return log[max(0, end - lines) : end]
    return log[-lines:] or ["(nothing logged)"]


def _answered(reply: str) -> bool:
    # A reply at all proves the server is up; NOAUTH/WRONGPASS when this run changed the password.
    return reply.strip() == "PONG" or reply.startswith(("NOAUTH", "WRONGPASS"))


def _listens(config: str) -> dict[str, Any]:
    directives = _directives(config)
    address = (directives.get("bind") or "127.0.0.1").split()[0]
    port = directives.get("tls-port") or directives.get("port") or "6379"
    return {"address": address, "port": port, "tls": "tls-port" in directives}


def _directives(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or line.startswith("["):
            continue
        if "=" in line and " " not in line.split("=", 1)[0]:  # a systemd drop-in
            key, _, value = line.partition("=")
        else:
            words = line.split(None, 1)
            key, value = words[0], words[1] if len(words) > 1 else ""
            if key == "user":  # users.acl: one entry per user name
                key, value = f"user {shlex.split(value)[0]}", value
        out[key] = f"{out[key]}; {value}" if key in out and key in ("ReadWritePaths",) else value
    return out


def _variable(key: str, results: bool) -> str:
    if key.startswith("user "):
        return "redis_password, redis_acl_* (the ACL users)"
    name = DIRECTIVES.get(key)
    if name is None:
        return "the role's templates"
    own = "results_" if results else ""
    return "redis_" + name.replace("*", own)


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {
            "redis_snapshot": redis_snapshot,
            "redis_managed": redis_managed,
            "redis_restore": redis_restore,
            "redis_changes": redis_changes,
            "redis_rollback_message": redis_rollback_message,
        }
