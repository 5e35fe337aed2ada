"""Replication with Sentinel: which host is the master, how the hosts reach each other, and the
rules a replicated group must follow (tasks/replication.yml, tasks/sentinel.yml, validate.yml).

A replicated group is the inventory group named by redis_replication_group when it holds more
than one host: one master, the others its replicas, a Sentinel on each host. Which server is the
master is Sentinel's to decide once the group runs; the role asks this host's Sentinel, and only
a group no Sentinel watches yet starts with its first host as the master.
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

SPEC = Path(__file__).resolve().parents[1] / "meta" / "argument_specs.yml"
MASTER_NAME = re.compile(r"[A-Za-z0-9_.-]+")
# Settings every server of a group must share: a replica or a Sentinel configured otherwise
# than its peers cannot follow them (another port, user, password or TLS) or would behave
# differently once it is the master (eviction, persistence). Secrets are compared, never shown.
SHARED = (
    "redis_auth_mode",
    "redis_port",
    "redis_tls",
    "redis_tls_source",
    "redis_acl_admin_user",
    "redis_acl_celery_user",
    "redis_acl_monitor_user",
    "redis_acl_replication_user",
    "redis_acl_sentinel_user",
    "redis_acl_key_prefix",
    "redis_acl_celery_broker_db",
    "redis_maxmemory_policy",
    "redis_persistence",
    "redis_holds_broker",
    "redis_results_server",
    "redis_sentinel_port",
    "redis_sentinel_master_name",
    "redis_sentinel_down_after_ms",
    "redis_sentinel_failover_timeout_ms",
    "redis_min_replicas_to_write",
    "redis_min_replicas_max_lag",
)
SHARED_SECRETS = (
    "redis_password",
    "redis_acl_celery_password",
    "redis_acl_monitor_password",
    "redis_acl_replication_password",
    "redis_acl_replication_password_previous",
    "redis_acl_sentinel_password",
    "redis_acl_sentinel_password_previous",
)


@functools.cache
def role_defaults(spec: Path = SPEC) -> dict[str, Any]:
    """The role's declared defaults that are plain values (not templates)."""
    options = yaml.safe_load(spec.read_text())["argument_specs"]["main"]["options"]
    return {
        name: opt["default"]
        for name, opt in options.items()
        if "default" in opt and not (isinstance(opt["default"], str) and "{{" in opt["default"])
    }


def _value(host_vars: Mapping[str, Any], name: str) -> object:
    return host_vars[name] if name in host_vars else role_defaults().get(name)


def replication_address(host_vars: Mapping[str, Any]) -> str:
    """The address the other servers and Sentinels reach this host's Redis on: the first
    address of its redis_bind that is not loopback, else its primary IPv4 address."""
    for address in host_vars.get("redis_bind") or []:
        try:
            if not ipaddress.ip_address(str(address)).is_loopback:
                return str(address)
        except ValueError:
            continue
    return str(host_vars["ansible_facts"]["default_ipv4"]["address"])


def bundle_redis_replication_address(host: str, hostvars: Mapping[str, Mapping[str, Any]]) -> str:
    """Filter: inventory_hostname | bundle_redis_replication_address(hostvars)."""
    return replication_address(hostvars[host])


def current_master(
    answer: Sequence[str], hosts: Sequence[str], hostvars: Mapping[str, Mapping[str, Any]]
) -> str:
    """The group's host that is the master: the one whose address Sentinel named (answer: the
    lines of SENTINEL GET-MASTER-ADDR-BY-NAME, address then port), else the group's first host
    (no Sentinel answered: a group starting up, or one growing from a single server)."""
    if len(answer) >= 1 and answer[0]:
        for host in hosts:
            if replication_address(hostvars[host]) == answer[0]:
                return host
    return hosts[0]


def bundle_redis_current_master(
    answer: Sequence[str], hosts: Sequence[str], hostvars: Mapping[str, Mapping[str, Any]]
) -> str:
    """Filter: sentinel_answer_lines | bundle_redis_current_master(hosts, hostvars)."""
    return current_master(list(answer), list(hosts), hostvars)


def replicaof(
    role: Sequence[str],
    master: str,
    host: str,
    hostvars: Mapping[str, Mapping[str, Any]],
    port: int | str,
) -> list[str]:
    """The REPLICAOF arguments that give HOST's running server its place in the group, from
    its ROLE reply (one line per field): NO ONE for the master, the master's address and PORT
    (the group's) for a replica; [] when it has that place already."""
    if master == host:
        return [] if role[:1] == ["master"] else ["NO", "ONE"]
    wanted = [replication_address(hostvars[master]), str(port)]
    if role[:1] == ["slave"] and list(role[1:3]) == wanted:
        return []
    return wanted


def bundle_redis_replicaof(
    role: Sequence[str],
    master: str,
    host: str,
    hostvars: Mapping[str, Mapping[str, Any]],
    port: int | str,
) -> list[str]:
    """Filter: role.stdout_lines | bundle_redis_replicaof(master, inventory_hostname, hostvars,
    redis_port)."""
    return replicaof(list(role), master, host, hostvars, port)


def replication_errors(v: Mapping[str, Any], hosts: Sequence[str]) -> list[str]:
    """Messages for a replicated group's rules (v: this host's variables; hosts: the group).

    A group of one host (or no group) has none of these rules: it is today's single server.
    """
    if len(hosts) < 2:
        return []
    group = v.get("redis_replication_group")
    size = f"group {group!r} has {len(hosts)} hosts ({', '.join(hosts)})"
    errors: list[str] = []
    if len(hosts) % 2 == 0:
        errors.append(
            f"{size}: a replicated group needs an odd number of hosts, 3 or more. Its Sentinels"
            " fail over on a majority, and an even group survives no more lost hosts than the"
            " odd one below it (2 hosts survive none). Add a host or remove one."
        )
    if v.get("redis_auth_mode") != "acl":
        errors.append(
            f"{size}, so it is replicated with Sentinel, but redis_auth_mode is"
            f" {v.get('redis_auth_mode')!r}: replication and Sentinel log in with users of their"
            " own, least-privilege, which needs redis_auth_mode: acl. Set it for the group."
        )
    if v.get("redis_results_server"):
        errors.append(
            f"{size}, so it is replicated with Sentinel, but redis_results_server is on: a"
            " separate results server is not replicated yet. Turn redis_results_server off"
            " (results then share the replicated server, database 1)."
        )
    name = v.get("redis_sentinel_master_name")
    if not (isinstance(name, str) and MASTER_NAME.fullmatch(name)):
        errors.append(
            f"redis_sentinel_master_name ({name}) must be a name of letters, digits, '.', '-'"
            " or '_' (Sentinel and every client name the master by it)."
        )
    port = v.get("redis_sentinel_port")
    if not (isinstance(port, int) and 1 <= port <= 65535) or port == v.get("redis_port"):
        errors.append(
            f"redis_sentinel_port ({port}) must be a TCP port (1-65535) other than redis_port."
        )
    down_after, failover = (
        v.get("redis_sentinel_down_after_ms"),
        v.get("redis_sentinel_failover_timeout_ms"),
    )
    if not (isinstance(down_after, int) and 1000 <= down_after <= 600000):
        errors.append(
            f"redis_sentinel_down_after_ms ({down_after}) must be between 1000 and 600000: how"
            " long a master may not answer before Sentinel fails over."
        )
    if not (isinstance(failover, int) and isinstance(down_after, int) and failover > down_after):
        errors.append(
            f"redis_sentinel_failover_timeout_ms ({failover}) must be above"
            f" redis_sentinel_down_after_ms ({down_after})."
        )
    lag = v.get("redis_min_replicas_max_lag")
    if not (isinstance(lag, int) and lag >= 1):
        errors.append(f"redis_min_replicas_max_lag ({lag}) must be at least 1 (seconds).")
    replicas = v.get("redis_min_replicas_to_write")
    if not (isinstance(replicas, int) and 0 <= replicas < len(hosts)):
        errors.append(
            f"redis_min_replicas_to_write ({replicas}) must be between 0 and {len(hosts) - 1}"
            f" ({size}): the master refuses writes while fewer replicas are in sync."
        )
    for user in ("replication", "sentinel"):
        password = v.get(f"redis_acl_{user}_password")
        if not (isinstance(password, str) and len(password) >= 16 and password.isprintable()):
            errors.append(
                f"redis_acl_{user}_password must be at least 16 characters without control"
                f" characters ({size}, so it is replicated with Sentinel). Generate one (openssl"
                f" rand -base64 32), store it in the vault file as vault_redis_{user}_password"
                " and reference it."
            )
    users = [v.get(f"redis_acl_{user}_user") for user in ("replication", "sentinel")]
    others = {v.get(f"redis_acl_{user}_user") for user in ("admin", "celery", "monitor")}
    if len({*users} - others - {"default"}) != 2:
        errors.append(
            "redis_acl_replication_user and redis_acl_sentinel_user must be two names of their"
            f" own, not 'default' nor the admin, celery or monitor user (got {users})."
        )
    return errors


def bundle_redis_replication_errors(v: Mapping[str, Any], hosts: Sequence[str]) -> list[str]:
    """Filter: vars | bundle_redis_replication_errors(replication hosts)."""
    return replication_errors(v, list(hosts))


def mismatch_errors(hosts: Sequence[str], hostvars: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Messages for the settings the group's hosts must share but do not (the first host's
    value against each other's); secrets are named, never shown."""
    if len(hosts) < 2:
        return []
    first, *rest = hosts
    errors: list[str] = []
    for name in SHARED + SHARED_SECRETS:
        expected = _value(hostvars[first], name)
        differ = [host for host in rest if _value(hostvars[host], name) != expected]
        if not differ:
            continue
        if name in SHARED_SECRETS:
            shown = f"{name} differs between {first} and {', '.join(differ)}"
        else:
            values = ", ".join(f"{host}: {_value(hostvars[host], name)!r}" for host in differ)
            shown = f"{name} is {expected!r} on {first} but {values}"
        errors.append(
            f"{shown}: every host of a replicated group must share it (a replica or Sentinel"
            " must reach and replace its peers). Set it once for the group (group_vars)."
        )
    return errors


def bundle_redis_replication_mismatch_errors(
    hosts: Sequence[str], hostvars: Mapping[str, Mapping[str, Any]]
) -> list[str]:
    """Filter: replication hosts | bundle_redis_replication_mismatch_errors(hostvars)."""
    return mismatch_errors(list(hosts), hostvars)


def user_passwords(getuser: Sequence[str]) -> list[str] | None:
    """The password hashes (hex) in an ACL GETUSER reply (its lines); None when the reply is
    not a user's (no such user, an error)."""
    lines = [str(line).strip() for line in getuser]
    if "passwords" not in lines:
        return None
    found = []
    for line in lines[lines.index("passwords") + 1 :]:
        if not re.fullmatch(r"[0-9a-f]{64}", line):
            break
        found.append(line)
    return found


def _sha256(v: Mapping[str, Any], name: str) -> str | None:
    value = v.get(name)
    if value is None or value == "":
        return None
    return hashlib.sha256(str(value).encode("utf-8")).hexdigest()


def _answered(answers: Sequence[Mapping[str, Any]]) -> list[tuple[str, str, list[str]]]:
    """(variable, where, password hashes) for each user the running group told about: the
    results of validate.yml's ACL GETUSER loop, each item {variable, where}. A skipped one,
    or one nothing answered (a new host, a stopped server), tells nothing."""
    told = []
    for answer in answers:
        if answer.get("skipped") or answer.get("rc") != 0:
            continue
        known = user_passwords(answer.get("stdout_lines") or [])
        if known is not None:
            told.append((answer["item"]["variable"], answer["item"]["where"], known))
    return told


def group_password_errors(answers: Sequence[Mapping[str, Any]], v: Mapping[str, Any]) -> list[str]:
    """Messages for a replicated group's own passwords changed in one step (README, Rotating
    secrets). answers: as _answered reads them. v: the host's variables. Names the
    variables, never a value."""
    errors = []
    for variable, where, known in _answered(answers):
        previous = f"{variable}_previous"
        if _sha256(v, variable) in known or _sha256(v, previous) in known:
            continue
        if _sha256(v, previous) is None:
            errors.append(
                f"{variable} is not the password {where} know, and {previous} is empty: a"
                " change in one step would leave the group's servers and Sentinels refusing"
                f" each other. Rotate it in two steps (README, Rotating secrets): put the"
                f" password in use in {previous} and the new one in {variable}, deploy, then"
                f" empty {previous} and deploy again."
            )
        else:
            errors.append(
                f"Neither {variable} nor {previous} is the password {where} know: {previous}"
                " must be the password the group uses now. Check the vault file."
            )
    return errors


def unknown_passwords(answers: Sequence[Mapping[str, Any]], v: Mapping[str, Any]) -> list[str]:
    """The variables whose current password the running group, where it answered, does not
    know yet (step 1 of a rotation, before this run changed anything)."""
    return [
        variable for variable, _, known in _answered(answers) if _sha256(v, variable) not in known
    ]


def bundle_redis_unknown_passwords(
    answers: Sequence[Mapping[str, Any]], v: Mapping[str, Any]
) -> list[str]:
    """Filter: redis__group_users.results | bundle_redis_unknown_passwords(vars)."""
    return unknown_passwords(list(answers), v)


def bundle_redis_group_password_errors(
    answers: Sequence[Mapping[str, Any]], v: Mapping[str, Any]
) -> list[str]:
    """Filter: answers | bundle_redis_group_password_errors(vars) (under no_log)."""
    return group_password_errors(list(answers), v)


class FilterModule:
    """Replication with Sentinel."""

    def filters(self) -> dict[str, Any]:
        return {
            "bundle_redis_replication_address": bundle_redis_replication_address,
            "bundle_redis_current_master": bundle_redis_current_master,
            "bundle_redis_replicaof": bundle_redis_replicaof,
            "bundle_redis_replication_errors": bundle_redis_replication_errors,
            "bundle_redis_replication_mismatch_errors": bundle_redis_replication_mismatch_errors,
            "bundle_redis_group_password_errors": bundle_redis_group_password_errors,
            "bundle_redis_unknown_passwords": bundle_redis_unknown_passwords,
        }
