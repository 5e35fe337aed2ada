"""Which certificate each host needs from the bundle's CA (playbooks/certificates.yml).

The pki role issues the certificate it is asked for; the two sides decide what that is, each
from its own switches:

- a host of group redis whose redis_tls is on with redis_tls_source: bundle gets a server
  certificate (serverAuth, and clientAuth because Redis presents it when it replicates and the
  redis role's own redis-cli checks present it), for its inventory name, localhost and every
  address it binds;
- a host of group celery_workers whose celery_worker_redis_tls is on with
  celery_worker_redis_tls_source: bundle gets a client certificate (clientAuth) for its name;
- a host that is both gets the server certificate, which serves both sides.

The certificates play runs outside the roles, so it does not see their defaults: a value the
inventory leaves unset is the role's declared default (its argument spec), and the workers'
switches follow their Redis host's as the celery_worker role's defaults make them
(roles/celery_worker/filter_plugins/celery_worker_redis.py). An empty redis_bind is loopback
and the host's primary address, as in roles/redis/vars/main.yml (__redis_bind).

Beside the playbooks, like bundle_validate.py, so that every playbook in this directory has it
whatever the configuration.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

ROLES_DIR = Path(__file__).resolve().parents[2] / "roles"
SERVER_USAGES = ["serverAuth", "clientAuth"]
CLIENT_USAGES = ["clientAuth"]


@functools.cache
def declared_defaults(role: str, roles_dir: Path = ROLES_DIR) -> dict[str, Any]:
    """A role's declared defaults that are plain values (a template means nothing here)."""
    spec = yaml.safe_load((roles_dir / role / "meta" / "argument_specs.yml").read_text())
    options = spec["argument_specs"]["main"]["options"]
    return {
        name: opt["default"]
        for name, opt in options.items()
        if "default" in opt and not (isinstance(opt["default"], str) and "{{" in opt["default"])
    }


class _Host:
    """One host's variables, falling back to a role's declared defaults."""

    def __init__(self, name: str, variables: Mapping[str, Any], role: str) -> None:
        self.name = name
        self._vars = variables
        self._role = role

    def __contains__(self, name: str) -> bool:
        return name in self._vars

    def facts(self) -> Mapping[str, Any]:
        """The host's gathered facts; none when the run has not gathered them."""
        return self._vars.get("ansible_facts") or {}

    def __getitem__(self, name: str) -> Any:  # noqa: ANN401  (any variable's value)
        if name in self._vars:
            return self._vars[name]
        return declared_defaults(self._role)[name]


def _redis_addresses(server: _Host) -> list[str]:
    """The addresses Redis binds: redis_bind, or loopback and the host's primary address."""
    bind = [str(a) for a in server["redis_bind"] or []]
    if bind:
        return bind
    address = (server.facts().get("default_ipv4") or {}).get("address")
    if not address:
        raise ValueError(
            f"{server.name}: redis_bind is empty and the host's facts have no default IPv4"
            " address to put in its certificate. Gather facts in the play (gather_facts: true),"
            " or list the addresses Redis serves in redis_bind."
        )
    return ["127.0.0.1", str(address)]


def _server_wants_bundle(server: _Host) -> bool:
    return bool(server["redis_tls"]) and server["redis_tls_source"] == "bundle"


def _worker_wants_bundle(
    worker: _Host, groups: Mapping[str, Sequence[str]], hostvars: Mapping[str, Mapping[str, Any]]
) -> bool:
    """The worker's own celery_worker_redis_tls and _tls_source, or its Redis host's."""
    settings: dict[str, object] = {}
    for setting, server_name in (("tls", "redis_tls"), ("tls_source", "redis_tls_source")):
        name = f"celery_worker_redis_{setting}"
        if name in worker:
            settings[setting] = worker[name]
            continue
        group = str(worker["celery_worker_redis_group"])
        servers = list(groups.get(group) or [])
        if not servers:
            raise ValueError(
                f"{worker.name}: {name} is unset, so it follows the first host of group"
                f" {group!r} (celery_worker_redis_group), but the inventory has no host there."
                f" Add the Redis host to that group, or set {name} for a Redis the bundle does"
                " not deploy."
            )
        settings[setting] = _Host(servers[0], hostvars[servers[0]], "redis")[server_name]
    return bool(settings["tls"]) and settings["tls_source"] == "bundle"


def certificate_request(
    host: str, groups: Mapping[str, Sequence[str]], hostvars: Mapping[str, Mapping[str, Any]]
) -> dict[str, list[str]]:
    """The certificate HOST needs from the bundle's CA (the pki role's pki_certificate), or {}."""
    if host in (groups.get("redis") or []):
        server = _Host(host, hostvars[host], "redis")
        if _server_wants_bundle(server):
            names = [f"DNS:{host}", "DNS:localhost"]
            names += [f"IP:{address}" for address in _redis_addresses(server)]
            return {
                "subject_alt_name": list(dict.fromkeys(names)),
                "extended_key_usage": list(SERVER_USAGES),
            }
    if host in (groups.get("celery_workers") or []):
        worker = _Host(host, hostvars[host], "celery_worker")
        if _worker_wants_bundle(worker, groups, hostvars):
            return {
                "subject_alt_name": [f"DNS:{host}"],
                "extended_key_usage": list(CLIENT_USAGES),
            }
    return {}


def bundle_certificate_request(
    host: str, groups: Mapping[str, Sequence[str]], hostvars: Mapping[str, Mapping[str, Any]]
) -> dict[str, list[str]]:
    """Filter: inventory_hostname | bundle_certificate_request(groups, hostvars)."""
    return certificate_request(str(host), groups, hostvars)


class FilterModule:
    """What each host needs from the bundle's CA."""

    def filters(self) -> dict[str, Any]:
        return {"bundle_certificate_request": bundle_certificate_request}
