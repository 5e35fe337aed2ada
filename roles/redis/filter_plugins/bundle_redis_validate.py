"""The redis role's checks (tasks/validate.yml), and the memory limits they compare.

In the role's own filter_plugins/ because Ansible loads it whenever it loads the
role, whatever the configuration.

Each *_errors filter returns the messages of the rules that fail, one per problem, each
naming the variable and the fix; an empty list means the input is good. What a rule needs
from the host (its RAM) comes in as an argument; the certificate files are looked up on the
controller, where filters run, as Ansible's own `file` test does.
"""

from __future__ import annotations

import base64
import ipaddress
import os
import re
from collections.abc import Mapping
from typing import Any

WILDCARDS = {"0.0.0.0", "::", "*"}
# redis_maxmemory_policy's choices that delete keys when memory is full.
EVICTING_POLICIES = frozenset(
    {
        "allkeys-lru",
        "allkeys-lfu",
        "allkeys-random",
        "volatile-lru",
        "volatile-lfu",
        "volatile-random",
        "volatile-ttl",
    }
)
CONTROL = re.compile(r"[\x00-\x1f\x7f]")
ACL_USER = re.compile(r"[A-Za-z0-9_.-]+")
ACL_KEY_PREFIX = re.compile(r"[A-Za-z0-9_.:-]+")
# A command name as Redis 7.0 writes it, a subcommand as container|sub.
ACL_COMMAND = re.compile(r"[a-z]+([|][a-z-]+)?")
# An ACL channel rule's body: no spaces or control characters, no leading & (the rule's own
# marker), and not * alone (every channel).
ACL_CHANNEL = re.compile(r"(?!\*$)[^&\s\x00-\x1f\x7f][^\s\x00-\x1f\x7f]*")
KEYSPACE_FLAGS = re.compile(r"[KEg$lshzxetmdnA]*")
CONFIG_MODE = re.compile(r"0?[0-7]{3}")
# A size whose unset value (null) derives it from the host's RAM: 0 is not another way to
# say so, since Redis reads maxmemory 0 as no limit at all.
DERIVED_WHEN_UNSET = {
    "redis_maxmemory_mb": "redis_maxmemory_percent",
    "redis_results_maxmemory_mb": "redis_results_maxmemory_percent",
}


def _number(value: object) -> float | None:
    """The value if it is a number (true and false are not), else None."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return value
    return None


def _between(value: object, low: float, high: float) -> bool:
    number = _number(value)
    return number is not None and low <= number <= high


def _below(low: object, high: object) -> bool:
    a, b = _number(low), _number(high)
    return a is not None and b is not None and a < b


def maxmemory_mb(size: object, percent: object, memtotal_mb: object) -> object:
    """The memory limit in MiB: the size given, or unset (null) the percentage of the RAM."""
    if size is not None:
        return size
    total, share = _number(memtotal_mb), _number(percent)
    if total is None or share is None:
        return None
    return int(total * share / 100)


def bundle_redis_maxmemory_mb(size: object, percent: object, memtotal_mb: object) -> object:
    """Filter: redis_maxmemory_mb | bundle_redis_maxmemory_mb(percent, memtotal_mb)."""
    return maxmemory_mb(size, percent, memtotal_mb)


def _password_errors(value: object, name: str, rule: str, vault: str) -> list[str]:
    text = "" if value is None else str(value)
    if len(text) >= 16 and not CONTROL.search(text):
        return []
    return [f"{name} must be at least 16 characters without control characters{rule}{vault}"]


def password_errors(v: Mapping[str, Any]) -> list[str]:
    """Messages for the passwords (v: the host's variables, by name). They never show one."""
    errors = _password_errors(
        v.get("redis_password"),
        "redis_password",
        ".",
        " Generate one (openssl rand -base64 32) and store it in the inventory's vault file as"
        " vault_redis_password.",
    )
    if v.get("redis_auth_mode") == "acl":
        for user in ("celery", "monitor"):
            errors += _password_errors(
                v.get(f"redis_acl_{user}_password"),
                f"redis_acl_{user}_password",
                " when redis_auth_mode is acl.",
                " Generate one (openssl rand -base64 32), store it in the vault file as"
                f" vault_redis_{user}_password and reference it.",
            )
    return errors


# Each password a rotation may keep a previous one for: (current, previous, vault name).
ROTATED = (
    ("redis_password", "redis_password_previous", "vault_redis_password"),
    (
        "redis_acl_celery_password",
        "redis_acl_celery_password_previous",
        "vault_redis_celery_password",
    ),
    (
        "redis_acl_monitor_password",
        "redis_acl_monitor_password_previous",
        "vault_redis_monitor_password",
    ),
    (
        "redis_acl_replication_password",
        "redis_acl_replication_password_previous",
        "vault_redis_replication_password",
    ),
    (
        "redis_acl_sentinel_password",
        "redis_acl_sentinel_password_previous",
        "vault_redis_sentinel_password",
    ),
)


def previous_password_errors(v: Mapping[str, Any]) -> list[str]:
    """Messages for the previous passwords of a rotation (v: the host's variables, by name).

    They name the variables, never a value."""
    errors: list[str] = []
    for current, previous, vault in ROTATED:
        old = v.get(previous)
        if old is None or old == "":
            continue
        if v.get("redis_auth_mode") != "acl":
            errors.append(
                f"{previous} is set but redis_auth_mode is {v.get('redis_auth_mode')}:"
                " requirepass holds one password, so Redis cannot accept the old and the new"
                " one side by side. Switch to redis_auth_mode: acl to rotate without a gap"
                f" (README, Rotating secrets), or empty {previous}."
            )
        elif str(old) == str(v.get(current)):
            errors.append(
                f"{previous} is the same as {current}. Step 1 of a rotation puts the new"
                f" password in {current} ({vault} in the vault file) and the old one in"
                f" {previous} ({vault}_previous); once every client uses the new one, empty"
                f" {previous} and deploy again."
            )
    return errors


def bundle_redis_password_errors(variables: Mapping[str, Any]) -> list[str]:
    """Filter: vars | bundle_redis_password_errors (under no_log)."""
    return password_errors(variables) + previous_password_errors(variables)


def _size_errors(v: Mapping[str, Any], name: str) -> list[str]:
    size = v.get(name)
    if size is None:
        return []
    if size == 0 and _number(size) is not None:
        return [
            f"{name} is 0, which is not how the bundle says 'derive it' (Redis reads maxmemory 0"
            f" as no limit at all): leave {name} unset (remove it, or set it to null) to derive"
            f" it from {DERIVED_WHEN_UNSET[name]} of the host's RAM."
        ]
    if not _between(size, 1, float("inf")):
        return [
            f"{name} must be a size in MiB (at least 1), or unset to derive it from RAM"
            f" (got {size})."
        ]
    return []


def _memory_errors(v: Mapping[str, Any], memtotal_mb: object) -> list[str]:
    errors: list[str] = []
    for prefix in ("redis", "redis_results"):
        percent = v.get(f"{prefix}_maxmemory_percent")
        if not _between(percent, 1, 90):
            errors.append(f"{prefix}_maxmemory_percent must be between 1 and 90 (got {percent}).")
        errors += _size_errors(v, f"{prefix}_maxmemory_mb")
    size = v.get("redis_maxmemory_mb")
    if _number(size) is not None and size and not _below(size, memtotal_mb):
        errors.append(
            f"redis_maxmemory_mb ({size}) is not below this host's RAM ({memtotal_mb} MiB): Redis"
            " would be killed by the OOM killer before it refused a write. Lower it or leave it"
            " unset to derive it."
        )
    if v.get("redis_results_server"):
        broker = maxmemory_mb(size, v.get("redis_maxmemory_percent"), memtotal_mb)
        results = maxmemory_mb(
            v.get("redis_results_maxmemory_mb"),
            v.get("redis_results_maxmemory_percent"),
            memtotal_mb,
        )
        total = (_number(broker) or 0) + (_number(results) or 0)
        if not _below(total, memtotal_mb):
            errors.append(
                f"redis_maxmemory_mb ({broker}) plus redis_results_maxmemory_mb ({results}) is"
                f" not below this host's RAM ({memtotal_mb} MiB): with redis_results_server"
                " both servers share the host. Lower one of them (or their _percent)."
            )
    return errors


def _acl_errors(v: Mapping[str, Any]) -> list[str]:
    errors: list[str] = []
    users = [v.get(f"redis_acl_{user}_user") for user in ("admin", "celery", "monitor")]
    good = {u for u in users if isinstance(u, str) and ACL_USER.fullmatch(u) and u != "default"}
    if len(good) != 3:
        errors.append(
            "redis_acl_admin_user, redis_acl_celery_user and redis_acl_monitor_user must be"
            " three different names of letters, digits, '.', '-' or '_', none of them"
            f" 'default' (got {users})."
        )
    prefix = v.get("redis_acl_key_prefix")
    if not (isinstance(prefix, str) and ACL_KEY_PREFIX.fullmatch(prefix)):
        errors.append(
            f"redis_acl_key_prefix ({prefix}) must be non-empty and hold only letters, digits"
            " and . : - _ (it becomes an ACL key pattern); for example celery:."
        )
    commands = [
        c for c in v.get("redis_acl_celery_commands") or [] if not ACL_COMMAND.fullmatch(str(c))
    ]
    if commands:
        errors.append(
            f"redis_acl_celery_commands holds names that are not Redis commands ({commands}):"
            " write lower-case command names, subcommands as container|sub (script|load)."
        )
    channels = [
        c for c in v.get("redis_acl_celery_channels") or [] if not ACL_CHANNEL.fullmatch(str(c))
    ]
    if channels:
        errors.append(
            f"redis_acl_celery_channels holds entries that cannot be ACL channel rules"
            f" ({channels}): write each channel or pattern as the client sends it, without"
            " spaces, control characters or a leading &, and not * alone (that would open every"
            " channel); for example myapp:/0.events.*."
        )
    return errors


def _tls_errors(v: Mapping[str, Any]) -> list[str]:
    source = v.get("redis_tls_source")
    files = [v.get(f"redis_tls_{name}_file") for name in ("ca_cert", "cert", "key")]
    if source != "files" or all(isinstance(f, str) and f and os.path.isfile(f) for f in files):
        return []
    shown = ", ".join(f"'{f}'" for f in files)
    return [
        "redis_tls is on but the certificates cannot be found. With redis_tls_source: files,"
        " set redis_tls_ca_cert_file, redis_tls_cert_file and redis_tls_key_file to existing"
        f" files on the controller (got {shown}); or set redis_tls_source: bundle to have the"
        " bundle issue them from its own CA (playbooks/certificates.yml)."
    ]


def settings_errors(v: Mapping[str, Any], memtotal_mb: object) -> list[str]:
    """Messages for the role's settings but the passwords and redis_bind.

    v: the host's variables, by name; memtotal_mb: the host's RAM (fact memtotal_mb).
    """
    port, results_port = v.get("redis_port"), v.get("redis_results_port")
    databases, maxclients = v.get("redis_databases"), v.get("redis_maxclients")
    policy, mode = v.get("redis_maxmemory_policy"), v.get("redis_config_mode")
    events = v.get("redis_notify_keyspace_events")
    errors: list[str] = []
    if not _between(port, 1, 65535):
        errors.append(f"redis_port must be between 1 and 65535 (got {port}).")
    errors += _memory_errors(v, memtotal_mb)
    if v.get("redis_results_server") and not (
        _between(results_port, 1, 65535) and results_port != port
    ):
        errors.append(
            f"redis_results_port ({results_port}) must be a port between 1 and 65535 other than"
            f" redis_port ({port}): the results server listens beside the broker."
        )
    if not _between(databases, 2, 1024):
        errors.append(
            f"redis_databases must be between 2 and 1024 (got {databases}); the app uses db 0"
            " and 1."
        )
    if not _between(maxclients, 1, float("inf")):
        errors.append(f"redis_maxclients must be at least 1 (got {maxclients}).")
    if v.get("redis_holds_broker") and isinstance(policy, str) and policy in EVICTING_POLICIES:
        errors.append(
            f"redis_maxmemory_policy is {policy} but this server holds the Celery broker"
            " (redis_holds_broker: true). An evicting policy deletes queued tasks while reporting"
            " success. Use noeviction, or set redis_holds_broker: false on a results-only"
            " server."
        )
    if not (isinstance(mode, str) and CONFIG_MODE.fullmatch(mode) and mode.endswith("0")):
        errors.append(
            f"redis_config_mode is {mode}: redis.conf and the aclfile hold the password (or its"
            " hashes), and this mode would let every user on the host read them. Use 0640"
            " (redis and its group) or 0600."
        )
    if v.get("redis_auth_mode") == "acl":
        errors += _acl_errors(v)
    if not (isinstance(events, str) and KEYSPACE_FLAGS.fullmatch(events)):
        errors.append(
            f"redis_notify_keyspace_events ({events}) holds letters that are not Redis's"
            " notify-keyspace-events flags: use K, E, g, $, l, s, h, z, x, e, t, m, d, n and A"
            " (for example Kl), or leave it empty."
        )
    if v.get("redis_tls"):
        errors += _tls_errors(v)
    return errors


def bundle_redis_settings_errors(variables: Mapping[str, Any], memtotal_mb: object) -> list[str]:
    """Filter: vars | bundle_redis_settings_errors(ansible_facts['memtotal_mb'])."""
    return settings_errors(variables, memtotal_mb)


def bundle_redis_bind_errors(binds: object) -> list[str]:
    """Filter: redis_bind | bundle_redis_bind_errors. One message per entry Redis or the
    bundle's certificates step would refuse, or that would expose Redis to every network."""
    entries = binds if isinstance(binds, list | tuple) else [binds]
    errors = []
    for entry in entries:
        text = str(entry)
        if text in WILDCARDS:
            errors.append(
                f"redis_bind: {text!r} is a wildcard: list the addresses Redis serves instead."
                " Leave redis_bind empty for loopback plus the host's primary address."
            )
            continue
        try:
            ipaddress.ip_address(text)
        except ValueError:
            errors.append(
                f"redis_bind: {text!r} is not an IP address. Redis binds addresses, and each"
                " one goes into the server's TLS certificate as an IP address: use the host's"
                " address (for example 10.0.0.5), or leave redis_bind empty for loopback plus"
                " the host's primary address."
            )
    return errors


_PEM_CERTIFICATE = re.compile(r"-----BEGIN CERTIFICATE-----(.*?)-----END CERTIFICATE-----", re.S)


def _certificates(pem: str) -> list[str]:
    """The certificates of a PEM text, whitespace left out, in order."""
    return ["".join(body.split()) for body in _PEM_CERTIFICATE.findall(pem)]


def bundle_redis_ca_change_errors(
    trusted: Mapping[str, Any], installing: str, path: str, source: str, host: str
) -> list[str]:
    """Filter: redis__trusted_ca | bundle_redis_ca_change_errors(pem, path, source, host).
    TRUSTED is the slurp of the CA file a replicated group's server and Sentinel run with (none
    on a new host), INSTALLING the CA this run would put there, read on the controller from PATH
    (redis_tls_source SOURCE). A different one is refused: restarted in turn onto it, each
    server and Sentinel would refuse its peers' certificates and the group would stop."""
    content = trusted.get("content")
    if not content:
        return []
    now = base64.b64decode(content).decode("ascii", "replace")
    if _certificates(now) == _certificates(installing):
        return []
    put_back = (
        f"{path} and its key beside it, where the certificates step keeps the bundle's CA"
        if source == "bundle"
        else f"in {path}, the file redis_tls_ca_cert_file names"
    )
    return [
        f"redis_tls_source ({source}): the CA this run would install on {host} is not the one "
        "the replicated group's servers and Sentinels trust now (/etc/redis/tls/ca.crt). "
        "Restarted one at a time onto another CA, each would refuse its peers and the group "
        "would stop: a deploy does not replace a replicated group's CA. Put the earlier CA "
        f"back ({put_back}) and deploy again; no host has been changed."
    ]


class FilterModule:
    """The redis role's filters."""

    def filters(self) -> dict[str, Any]:
        return {
            "bundle_redis_bind_errors": bundle_redis_bind_errors,
            "bundle_redis_ca_change_errors": bundle_redis_ca_change_errors,
            "bundle_redis_password_errors": bundle_redis_password_errors,
            "bundle_redis_settings_errors": bundle_redis_settings_errors,
            "bundle_redis_maxmemory_mb": bundle_redis_maxmemory_mb,
        }
