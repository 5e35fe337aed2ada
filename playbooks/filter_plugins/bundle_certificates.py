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

The certificates the inventory supplies instead (a *_tls_source of files) are the user's to
renew: the validate play reads their dates here, refuses one that has expired and reports one
that expires within pki_renew_within_days, naming the variable that points at the file.

Beside the playbooks, like bundle_validate.py, so that every playbook in this directory has it
whatever the configuration.
"""

from __future__ import annotations

import datetime
import functools
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from cryptography import x509

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


def _worker_setting(
    worker: _Host,
    setting: str,
    groups: Mapping[str, Sequence[str]],
    hostvars: Mapping[str, Mapping[str, Any]],
) -> tuple[str, object]:
    """The worker's own celery_worker_redis_SETTING, or its Redis host's redis_SETTING: the
    variable that holds the value, and the value."""
    name = f"celery_worker_redis_{setting}"
    if name in worker:
        return name, worker[name]
    group = str(worker["celery_worker_redis_group"])
    servers = list(groups.get(group) or [])
    if not servers:
        raise ValueError(
            f"{worker.name}: {name} is unset, so it follows the first host of group"
            f" {group!r} (celery_worker_redis_group), but the inventory has no host there."
            f" Add the Redis host to that group, or set {name} for a Redis the bundle does"
            " not deploy."
        )
    server_name = f"redis_{setting}"
    return server_name, _Host(servers[0], hostvars[servers[0]], "redis")[server_name]


def _worker_tls_source(
    worker: _Host, groups: Mapping[str, Sequence[str]], hostvars: Mapping[str, Mapping[str, Any]]
) -> object:
    """Where the worker's TLS files come from (bundle or files), or None with TLS off."""
    if not _worker_setting(worker, "tls", groups, hostvars)[1]:
        return None
    return _worker_setting(worker, "tls_source", groups, hostvars)[1]


def _worker_wants_bundle(
    worker: _Host, groups: Mapping[str, Sequence[str]], hostvars: Mapping[str, Mapping[str, Any]]
) -> bool:
    """The worker's own celery_worker_redis_tls and _tls_source, or its Redis host's."""
    return _worker_tls_source(worker, groups, hostvars) == "bundle"


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


# --- the certificates the inventory supplies ------------------------------------------------


def supplied_certificates(
    host: str, groups: Mapping[str, Sequence[str]], hostvars: Mapping[str, Mapping[str, Any]]
) -> dict[str, object]:
    """The certificate files HOST installs from the inventory (a *_tls_source of files): the
    variable that names each one, and its path on the controller. Keys have no dates."""
    files: dict[str, object] = {}
    if host in (groups.get("redis") or []):
        server = _Host(host, hostvars[host], "redis")
        if server["redis_tls"] and server["redis_tls_source"] == "files":
            for name in ("redis_tls_ca_cert_file", "redis_tls_cert_file"):
                files[name] = server[name]
    if host in (groups.get("celery_workers") or []):
        worker = _Host(host, hostvars[host], "celery_worker")
        if _worker_tls_source(worker, groups, hostvars) == "files":
            # By default the workers trust the Redis host's CA file: that variable names it.
            name, path = _worker_setting(worker, "tls_ca_cert_file", groups, hostvars)
            files[name] = path
            files["celery_worker_redis_tls_cert_file"] = worker["celery_worker_redis_tls_cert_file"]
    return files


@dataclass
class Dates:
    """What the dates of the supplied certificates call for: errors stop the run."""

    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def _when(moment: datetime.datetime, now: datetime.datetime) -> str:
    days = (moment - now).days
    left = "less than a day" if days < 1 else f"{days} day{'s' if days > 1 else ''}"
    return f"{moment:%Y-%m-%d %H:%M} UTC, in {left}"


def certificate_dates(
    files: Mapping[str, object], renew_within_days: int, now: datetime.datetime
) -> Dates:
    """Each certificate in the files (variable: path on the controller) that has expired, or
    expires within renew_within_days of now (a timezone-aware datetime)."""
    dates = Dates()
    horizon = now + datetime.timedelta(days=renew_within_days)
    for name, path in files.items():
        where = f"{name} ({path})"
        if not (isinstance(path, str) and path and os.path.isfile(path)):
            dates.errors.append(
                f"{name} ({path!r}) is not a file on the controller. With TLS from files, point"
                " it at the PEM certificate the hosts get; or set redis_tls_source: bundle to"
                " have the bundle issue and renew them."
            )
            continue
        data = Path(path).read_bytes()
        if data.startswith(b"$ANSIBLE_VAULT;"):
            dates.warnings.append(
                f"{where} is vault-encrypted, so its expiry date cannot be checked here. A"
                " certificate is public: keep it unencrypted (only the key needs the vault), or"
                " check its date yourself."
            )
            continue
        try:
            certificates = x509.load_pem_x509_certificates(data)
        except ValueError:
            dates.errors.append(
                f"{where} holds no PEM certificate (-----BEGIN CERTIFICATE-----), which is"
                " what Redis and the workers read. Point it at the certificate, not the key."
            )
            continue
        for certificate in certificates:
            subject = certificate.subject.rfc4514_string()
            end = certificate.not_valid_after_utc
            if end <= now:
                dates.errors.append(
                    f"{where}: the certificate {subject} expired on {end:%Y-%m-%d %H:%M} UTC,"
                    " and TLS clients refuse it. Replace the file with a renewed certificate"
                    " (the bundle renews only the certificates it issues itself)."
                )
            elif end < horizon:
                dates.warnings.append(
                    f"{where}: the certificate {subject} expires on {_when(end, now)}"
                    f" (pki_renew_within_days is {renew_within_days}). Replace the file with a"
                    " renewed certificate and run deploy.yml before then: the bundle renews only"
                    " the certificates it issues itself."
                )
    return dates


def _supplied_dates(
    host: str, groups: Mapping[str, Sequence[str]], hostvars: Mapping[str, Mapping[str, Any]]
) -> Dates:
    files = supplied_certificates(host, groups, hostvars)
    if not files:
        return Dates()
    renew_within_days = _Host(host, hostvars[host], "pki")["pki_renew_within_days"]
    return certificate_dates(files, renew_within_days, datetime.datetime.now(datetime.UTC))


def bundle_supplied_certificate_errors(
    host: str, groups: Mapping[str, Sequence[str]], hostvars: Mapping[str, Mapping[str, Any]]
) -> list[str]:
    """Filter: inventory_hostname | bundle_supplied_certificate_errors(groups, hostvars)."""
    return _supplied_dates(str(host), groups, hostvars).errors


def bundle_supplied_certificate_warnings(
    host: str, groups: Mapping[str, Sequence[str]], hostvars: Mapping[str, Mapping[str, Any]]
) -> list[str]:
    """Filter: inventory_hostname | bundle_supplied_certificate_warnings(groups, hostvars)."""
    return _supplied_dates(str(host), groups, hostvars).warnings


class FilterModule:
    """What each host needs from the bundle's CA, and the dates of the certificates supplied."""

    def filters(self) -> dict[str, Any]:
        return {
            "bundle_certificate_request": bundle_certificate_request,
            "bundle_supplied_certificate_errors": bundle_supplied_certificate_errors,
            "bundle_supplied_certificate_warnings": bundle_supplied_certificate_warnings,
        }
