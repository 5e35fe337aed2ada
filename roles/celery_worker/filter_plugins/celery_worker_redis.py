"""The workers' side of the Redis server they use, derived from that server's own variables.

The one place where the bundle wires the two sides together: the celery_worker role's defaults
(celery_worker_redis_host, _port, _password, _tls ...) call celery_worker_redis_setting, so an
inventory sets each switch once, for the Redis hosts (redis_auth_mode, redis_tls,
redis_results_server, redis_port ...), and the workers follow. A value the inventory does not
set on the Redis host is the redis role's own default, read from its argument spec (role
defaults are not part of another host's hostvars).

celery_worker_redis_mismatch_errors is the check for the other direction: a workers' value set
by hand that contradicts the server (TLS on one side only, another CA) stops the run before any
host changes.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

REDIS_SPEC = Path(__file__).resolve().parents[2] / "redis" / "meta" / "argument_specs.yml"


@functools.cache
def redis_defaults(spec: Path = REDIS_SPEC) -> dict[str, Any]:
    """The redis role's declared defaults that are plain values (not templates)."""
    options = yaml.safe_load(spec.read_text())["argument_specs"]["main"]["options"]
    return {
        name: opt["default"]
        for name, opt in options.items()
        if "default" in opt and not (isinstance(opt["default"], str) and "{{" in opt["default"])
    }


class _Server:
    """One Redis host's variables, falling back to the redis role's defaults."""

    def __init__(self, variables: Mapping[str, Any]) -> None:
        self._vars = variables

    def __getitem__(self, name: str) -> object:
        if name in self._vars:
            return self._vars[name]
        return redis_defaults()[name]

    @property
    def acl(self) -> bool:
        return bool(self["redis_auth_mode"] == "acl")


# Each setting of the workers' side: how it follows from the server's variables. Only the
# entry asked for is read, so a secret is only templated when the password is asked for.
SETTINGS: dict[str, Callable[[_Server, str], object]] = {
    "host": lambda server, name: name,
    # The Redis group's hosts, when there are several: replicated, with a Sentinel on each.
    "sentinel_port": lambda server, name: server["redis_sentinel_port"],
    "sentinel_master_name": lambda server, name: server["redis_sentinel_master_name"],
    # A task is accepted once as many replicas hold it as the master needs in sync to write.
    "publish_replicas": lambda server, name: server["redis_min_replicas_to_write"],
    "port": lambda server, name: server["redis_port"],
    "result_port": lambda server, name: (
        server["redis_results_port"] if server["redis_results_server"] else None
    ),
    "broker_db": lambda server, name: server["redis_acl_celery_broker_db"],
    "username": lambda server, name: server["redis_acl_celery_user"] if server.acl else "",
    "password": lambda server, name: (
        server["redis_acl_celery_password"] if server.acl else server["redis_password"]
    ),
    "key_prefix": lambda server, name: server["redis_acl_key_prefix"] if server.acl else "",
    "tls": lambda server, name: server["redis_tls"],
    "tls_source": lambda server, name: server["redis_tls_source"],
    "tls_ca_cert_file": lambda server, name: server["redis_tls_ca_cert_file"],
}


def _server_host(group: str, groups: Mapping[str, Sequence[str]]) -> str:
    hosts = list(groups.get(group) or [])
    if not hosts:
        raise ValueError(
            f"celery_worker_redis_group: the inventory has no host in group {group!r}. Add the"
            " Redis host to that group, or set celery_worker_redis_host and the other"
            " celery_worker_redis_* variables for a Redis the bundle does not deploy."
        )
    return hosts[0]


def celery_worker_redis_setting(
    group: str,
    setting: str,
    groups: Mapping[str, Sequence[str]],
    hostvars: Mapping[str, Mapping[str, Any]],
) -> object:
    """Filter: celery_worker_redis_group | celery_worker_redis_setting('port', groups, hostvars)."""
    if setting not in SETTINGS:
        raise ValueError(f"celery_worker_redis_setting: unknown setting {setting!r}")
    name = _server_host(group, groups)
    return SETTINGS[setting](_Server(hostvars[name]), name)


def celery_worker_redis_sentinel_hosts(
    group: str, groups: Mapping[str, Sequence[str]]
) -> list[str]:
    """Filter: celery_worker_redis_group | celery_worker_redis_sentinel_hosts(groups).

    The group's hosts when it has several (a replicated Redis: the workers ask their
    Sentinels where the master is), else none (the workers connect to the one server).
    """
    _server_host(group, groups)
    hosts = list(groups[group])
    return hosts if len(hosts) > 1 else []


def celery_worker_redis_mismatch_errors(
    client: Mapping[str, Any],
    group: str,
    groups: Mapping[str, Sequence[str]],
    hostvars: Mapping[str, Mapping[str, Any]],
) -> list[str]:
    """Messages for the workers' TLS settings that contradict the Redis host they connect to.

    client: tls, tls_source and tls_ca_cert_file as the worker host has them. Only a host
    that connects to the group's server is compared (celery_worker_redis_host is that host).
    """
    name = _server_host(group, groups)
    if client.get("host") != name:
        return []  # a Redis the bundle does not deploy: nothing to compare with
    server = _Server(hostvars[name])
    errors: list[str] = []
    if bool(client["tls"]) != bool(server["redis_tls"]):
        errors.append(
            f"celery_worker_redis_tls is {bool(client['tls'])} but redis_tls is"
            f" {bool(server['redis_tls'])} on {name}: the workers could not connect. Set redis_tls"
            " once (group_vars/all) and leave celery_worker_redis_tls unset, so it follows."
        )
    elif server["redis_tls"]:
        if client["tls_source"] != server["redis_tls_source"]:
            errors.append(
                f"celery_worker_redis_tls_source is {client['tls_source']!r} but"
                f" redis_tls_source is {server['redis_tls_source']!r} on {name}: one side would"
                " trust a CA the other does not use. Leave celery_worker_redis_tls_source unset"
                " so it follows redis_tls_source."
            )
        elif (
            server["redis_tls_source"] == "files"
            and client["tls_ca_cert_file"] != server["redis_tls_ca_cert_file"]
        ):
            errors.append(
                f"celery_worker_redis_tls_ca_cert_file ({client['tls_ca_cert_file']!r}) is not"
                f" redis_tls_ca_cert_file ({server['redis_tls_ca_cert_file']!r}) on {name}: the"
                " workers must verify Redis with the CA that signed its certificate, and Redis"
                " theirs. Leave celery_worker_redis_tls_ca_cert_file unset so it follows."
            )
    return errors


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {
            "celery_worker_redis_setting": celery_worker_redis_setting,
            "celery_worker_redis_sentinel_hosts": celery_worker_redis_sentinel_hosts,
            "celery_worker_redis_mismatch_errors": celery_worker_redis_mismatch_errors,
        }
