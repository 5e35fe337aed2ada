"""What each host needs from the bundle's CA (playbooks/filter_plugins/bundle_certificates.py),
without a lab: a Redis host a server certificate, a worker host a client certificate, each only
where its side's TLS is on with the bundle as the source. And the dates of the certificate
files an inventory supplies instead: expired ones refused, ones about to expire reported."""

from __future__ import annotations

import datetime
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from certfiles import NOW, certificate, expiring_in, write
from conftest import REPO

sys.path.insert(0, str(REPO / "playbooks/filter_plugins"))
import bundle_certificates  # a filter plugin file, not an installed module
from bundle_certificates import (
    certificate_dates,
    certificate_request,
    declared_defaults,
    supplied_certificates,
)

REDIS = "cache-a.example.internal"
WORKER = "w1.example.internal"
GROUPS = {"redis": [REDIS], "celery_workers": [WORKER]}
FACTS = {"ansible_facts": {"default_ipv4": {"address": "10.0.0.5"}}}
SERVER_USAGES = ["serverAuth", "clientAuth"]


def requests(
    server: dict[str, Any], worker: dict[str, Any] | None = None
) -> dict[str, dict[str, list[str]]]:
    hostvars = {REDIS: FACTS | server, WORKER: worker or {}}
    return {host: certificate_request(host, GROUPS, hostvars) for host in hostvars}


def test_without_tls_nobody_needs_a_certificate() -> None:
    assert requests({}) == {REDIS: {}, WORKER: {}}


def test_tls_from_the_bundle_gives_redis_a_server_and_the_worker_a_client_certificate() -> None:
    assert requests({"redis_tls": True}) == {
        REDIS: {
            "subject_alt_name": [f"DNS:{REDIS}", "DNS:localhost", "IP:127.0.0.1", "IP:10.0.0.5"],
            "extended_key_usage": SERVER_USAGES,
        },
        WORKER: {"subject_alt_name": [f"DNS:{WORKER}"], "extended_key_usage": ["clientAuth"]},
    }


def test_the_server_certificate_names_every_bound_address_once() -> None:
    server = {"redis_tls": True, "redis_bind": ["10.0.0.5", "127.0.0.1", "10.0.0.5", "fd00::5"]}
    assert requests(server)[REDIS]["subject_alt_name"] == [
        f"DNS:{REDIS}",
        "DNS:localhost",
        "IP:10.0.0.5",
        "IP:127.0.0.1",
        "IP:fd00::5",
    ]


def test_an_empty_bind_without_facts_is_refused_with_the_fix() -> None:
    hostvars = {REDIS: {"redis_tls": True}, WORKER: {}}
    with pytest.raises(ValueError, match=r"gather_facts: true\), or list the addresses"):
        certificate_request(REDIS, GROUPS, hostvars)


def test_a_configured_bind_needs_no_facts() -> None:
    hostvars = {REDIS: {"redis_tls": True, "redis_bind": ["10.1.1.1"]}, WORKER: {}}
    names = certificate_request(REDIS, GROUPS, hostvars)["subject_alt_name"]
    assert names == [f"DNS:{REDIS}", "DNS:localhost", "IP:10.1.1.1"]


def test_files_source_issues_nothing() -> None:
    assert requests({"redis_tls": True, "redis_tls_source": "files"}) == {REDIS: {}, WORKER: {}}


def test_the_workers_own_settings_outrank_the_servers() -> None:
    # Validation refuses a contradiction with the group's server; a worker that reaches a Redis
    # the bundle does not deploy keeps its own switches.
    own = {"celery_worker_redis_tls": True, "celery_worker_redis_tls_source": "bundle"}
    assert requests({}, own)[WORKER]["extended_key_usage"] == ["clientAuth"]
    off = {"celery_worker_redis_tls": False}
    assert requests({"redis_tls": True}, off)[WORKER] == {}
    files = {"celery_worker_redis_tls_source": "files"}
    assert requests({"redis_tls": True}, files)[WORKER] == {}


def test_the_worker_follows_the_first_host_of_its_redis_group() -> None:
    groups = {"redis": [REDIS], "cache": ["cache-b"], "celery_workers": [WORKER]}
    hostvars: dict[str, dict[str, Any]] = {
        REDIS: FACTS,
        "cache-b": {"redis_tls": True},
        WORKER: {"celery_worker_redis_group": "cache"},
    }
    assert certificate_request(WORKER, groups, hostvars)["extended_key_usage"] == ["clientAuth"]


def test_an_empty_redis_group_is_refused_with_the_fix() -> None:
    groups = {"redis": [], "celery_workers": [WORKER]}
    with pytest.raises(ValueError, match=r"no host there\. Add the Redis host to that group"):
        certificate_request(WORKER, groups, {WORKER: {}})


def test_a_host_on_both_sides_gets_the_server_certificate_which_also_serves_clients() -> None:
    groups = {"redis": [REDIS], "celery_workers": [REDIS]}
    request = certificate_request(REDIS, groups, {REDIS: FACTS | {"redis_tls": True}})
    assert request["extended_key_usage"] == SERVER_USAGES


def test_a_host_outside_both_groups_needs_nothing() -> None:
    assert certificate_request("other", GROUPS, {"other": {"redis_tls": True}}) == {}


def test_the_fallbacks_are_the_roles_declared_defaults() -> None:
    for role, names in {
        "redis": ("redis_tls", "redis_tls_source", "redis_bind"),
        "celery_worker": ("celery_worker_redis_group",),
    }.items():
        spec = yaml.safe_load((REPO / f"roles/{role}/meta/argument_specs.yml").read_text())
        options = spec["argument_specs"]["main"]["options"]
        for name in names:
            assert declared_defaults(role)[name] == options[name]["default"], name


def test_templated_defaults_are_left_out(tmp_path: Path) -> None:
    options = {"x_a": {"default": "{{ b }}"}, "x_c": {}, "x_d": {"default": 3}}
    spec = {"argument_specs": {"main": {"options": options}}}
    (tmp_path / "x/meta").mkdir(parents=True)
    (tmp_path / "x/meta/argument_specs.yml").write_text(yaml.safe_dump(spec))
    assert declared_defaults("x", tmp_path) == {"x_d": 3}


def test_the_default_bind_is_the_redis_roles() -> None:
    # The filter derives an empty redis_bind as the redis role does; both change together.
    variables = yaml.safe_load((REPO / "roles/redis/vars/main.yml").read_text())
    rule = " ".join(variables["__redis_bind"].split())
    assert rule == (
        "{{ redis_bind if redis_bind | length > 0"
        " else ['127.0.0.1', ansible_facts['default_ipv4']['address']] | unique }}"
    )


def test_the_usages_are_those_the_pki_role_accepts() -> None:
    spec = yaml.safe_load((REPO / "roles/pki/meta/argument_specs.yml").read_text())
    option = spec["argument_specs"]["main"]["options"]["pki_certificate"]
    choices = option["options"]["extended_key_usage"]["choices"]
    used = bundle_certificates.SERVER_USAGES + bundle_certificates.CLIENT_USAGES
    assert set(used) <= set(choices)


def test_filters_carry_the_bundle_prefix() -> None:
    names = bundle_certificates.FilterModule().filters()
    assert list(names) == [
        "bundle_certificate_request",
        "bundle_supplied_certificate_errors",
        "bundle_supplied_certificate_warnings",
    ]


def test_only_the_pki_role_issues_certificates_and_knows_where_they_are_kept() -> None:
    for role in ("redis", "celery_worker"):
        for path in sorted((REPO / "roles" / role).rglob("*")):
            if path.is_file() and path.suffix in {".yml", ".j2", ".py"}:
                text = path.read_text()
                for word in ("community.crypto", "pki_dir", "build/pki", "ownca"):
                    assert word not in text, f"{path.relative_to(REPO)} names {word}"


def test_the_plays_hand_the_roles_what_the_pki_role_published() -> None:
    redis = yaml.safe_load((REPO / "playbooks/redis.yml").read_text())[0]
    (role,) = redis["roles"]
    assert role["vars"]["redis_tls_bundle_files"] == "{{ pki_issued | default({}) }}"
    (workers,) = [
        play
        for play in yaml.safe_load((REPO / "playbooks/workers.yml").read_text())
        if play.get("roles")
    ]
    assert workers["vars"]["celery_worker_redis_tls_bundle_files"] == (
        "{{ pki_issued | default({}) }}"
    )


def test_the_certificates_play_runs_whenever_a_consumer_does() -> None:
    # --tags redis or --tags celery_worker still issues what those plays install.
    (play,) = yaml.safe_load((REPO / "playbooks/certificates.yml").read_text())
    tags = {
        yaml.safe_load((REPO / f"playbooks/{name}.yml").read_text())[0]["tags"][0]
        for name in ("redis", "workers")
    }
    assert tags <= set(play["tags"])
    assert "validate" not in play["tags"]  # --tags validate (the bad-input tests) issues nothing
    assert set(play["hosts"].split(":")) == {"redis", "celery_workers"}


# --- the certificates the inventory supplies ------------------------------------------------

SERVER_FILES = {
    "redis_tls": True,
    "redis_tls_source": "files",
    "redis_tls_ca_cert_file": "/srv/pki/ca.pem",
    "redis_tls_cert_file": "/srv/pki/redis.pem",
    "redis_tls_key_file": "/srv/pki/redis.key",
}
WORKER_FILES = {
    "celery_worker_redis_tls_cert_file": "/srv/pki/w1.pem",
    "celery_worker_redis_tls_key_file": "/srv/pki/w1.key",
}


def supplied(server: dict[str, Any], worker: dict[str, Any]) -> dict[str, dict[str, object]]:
    hostvars = {REDIS: server, WORKER: worker}
    return {host: supplied_certificates(host, GROUPS, hostvars) for host in hostvars}


def test_each_side_names_the_certificates_it_installs_from_files() -> None:
    # The workers trust the Redis host's CA file unless they name their own: that variable
    # points at it. Keys have no dates.
    assert supplied(SERVER_FILES, WORKER_FILES) == {
        REDIS: {
            "redis_tls_ca_cert_file": "/srv/pki/ca.pem",
            "redis_tls_cert_file": "/srv/pki/redis.pem",
        },
        WORKER: {
            "redis_tls_ca_cert_file": "/srv/pki/ca.pem",
            "celery_worker_redis_tls_cert_file": "/srv/pki/w1.pem",
        },
    }
    own_ca = WORKER_FILES | {"celery_worker_redis_tls_ca_cert_file": "/srv/pki/w-ca.pem"}
    assert supplied(SERVER_FILES, own_ca)[WORKER]["celery_worker_redis_tls_ca_cert_file"] == (
        "/srv/pki/w-ca.pem"
    )


def test_nothing_is_supplied_without_tls_or_with_the_bundle_as_source() -> None:
    assert supplied({}, WORKER_FILES) == {REDIS: {}, WORKER: {}}
    assert supplied(SERVER_FILES | {"redis_tls": False}, WORKER_FILES) == {REDIS: {}, WORKER: {}}
    bundle = SERVER_FILES | {"redis_tls_source": "bundle"}
    assert supplied(bundle, WORKER_FILES) == {REDIS: {}, WORKER: {}}
    # A worker's own switch outranks the server's.
    assert supplied(SERVER_FILES, {"celery_worker_redis_tls": False})[WORKER] == {}


def test_a_worker_of_a_redis_the_bundle_does_not_deploy_names_its_own_files() -> None:
    own = WORKER_FILES | {
        "celery_worker_redis_tls": True,
        "celery_worker_redis_tls_source": "files",
        "celery_worker_redis_tls_ca_cert_file": "/srv/pki/their-ca.pem",
    }
    assert supplied({}, own)[WORKER] == {
        "celery_worker_redis_tls_ca_cert_file": "/srv/pki/their-ca.pem",
        "celery_worker_redis_tls_cert_file": "/srv/pki/w1.pem",
    }


def dates(files: dict[str, str], days: int = 30) -> bundle_certificates.Dates:
    return certificate_dates(files, days, NOW)


def test_certificates_far_from_their_end_call_for_nothing(tmp_path: Path) -> None:
    files = {
        "redis_tls_ca_cert_file": write(tmp_path / "ca.pem", certificate("ca", expiring_in(900))),
        "redis_tls_cert_file": write(tmp_path / "r.pem", certificate("r", expiring_in(31))),
    }
    assert dates(files) == bundle_certificates.Dates([], [])


def test_a_certificate_within_the_renewal_window_is_reported_with_its_variable_and_date(
    tmp_path: Path,
) -> None:
    path = write(tmp_path / "redis.pem", certificate("cache-a", expiring_in(12.5)))
    result = dates({"redis_tls_cert_file": path})
    assert result.errors == []
    assert result.warnings == [
        f"redis_tls_cert_file ({path}): the certificate CN=cache-a expires on 2030-06-14 00:00"
        " UTC, in 12 days (pki_renew_within_days is 30). Replace the file with a renewed"
        " certificate and run deploy.yml before then: the bundle renews only the certificates it"
        " issues itself."
    ]
    # The window is pki_renew_within_days: with 10, the same file is fine.
    assert dates({"redis_tls_cert_file": path}, days=10).warnings == []


def test_an_expired_certificate_is_refused_with_its_variable_and_date(tmp_path: Path) -> None:
    path = write(tmp_path / "w1.pem", certificate("w1", expiring_in(-3)))
    result = dates({"celery_worker_redis_tls_cert_file": path})
    assert result.warnings == []
    assert result.errors == [
        f"celery_worker_redis_tls_cert_file ({path}): the certificate CN=w1 expired on"
        " 2030-05-29 12:00 UTC, and TLS clients refuse it. Replace the file with a renewed"
        " certificate (the bundle renews only the certificates it issues itself)."
    ]


def test_the_last_day_and_the_exact_end(tmp_path: Path) -> None:
    soon = write(tmp_path / "soon.pem", certificate("soon", expiring_in(0.5)))
    assert "in less than a day" in dates({"redis_tls_cert_file": soon}).warnings[0]
    one = write(tmp_path / "one.pem", certificate("one", expiring_in(1.5)))
    assert "in 1 day (" in dates({"redis_tls_cert_file": one}).warnings[0]
    now = write(tmp_path / "now.pem", certificate("now", NOW))
    assert "expired on 2030-06-01 12:00 UTC" in dates({"redis_tls_cert_file": now}).errors[0]


def test_every_certificate_of_a_ca_bundle_is_read(tmp_path: Path) -> None:
    path = write(
        tmp_path / "cas.pem",
        certificate("new-ca", expiring_in(3000)),
        certificate("old-ca", expiring_in(5)),
    )
    result = dates({"redis_tls_ca_cert_file": path})
    assert len(result.warnings) == 1
    assert "the certificate CN=old-ca expires on" in result.warnings[0]


def test_files_that_cannot_be_read_are_refused_or_reported(tmp_path: Path) -> None:
    key = tmp_path / "redis.key"
    key.write_text("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
    vaulted = tmp_path / "vaulted.pem"
    vaulted.write_text("$ANSIBLE_VAULT;1.1;AES256\n6162\n")
    result = dates(
        {
            "redis_tls_cert_file": str(key),
            "redis_tls_ca_cert_file": str(tmp_path / "missing.pem"),
            "celery_worker_redis_tls_cert_file": "",
            "celery_worker_redis_tls_ca_cert_file": str(vaulted),
        }
    )
    assert result.errors == [
        f"redis_tls_cert_file ({key}) holds no PEM certificate (-----BEGIN CERTIFICATE-----),"
        " which is what Redis and the workers read. Point it at the certificate, not the key.",
        f"redis_tls_ca_cert_file ('{tmp_path}/missing.pem') is not a file on the controller."
        " With TLS from files, point it at the PEM certificate the hosts get; or set"
        " redis_tls_source: bundle to have the bundle issue and renew them.",
        "celery_worker_redis_tls_cert_file ('') is not a file on the controller. With TLS from"
        " files, point it at the PEM certificate the hosts get; or set redis_tls_source: bundle"
        " to have the bundle issue and renew them.",
    ]
    assert result.warnings == [
        f"celery_worker_redis_tls_ca_cert_file ({vaulted}) is vault-encrypted, so its expiry date"
        " cannot be checked here. A certificate is public: keep it unencrypted (only the key"
        " needs the vault), or check its date yourself."
    ]


def test_the_filters_read_the_hosts_files_and_window(tmp_path: Path) -> None:
    now = datetime.datetime.now(datetime.UTC)
    expired = write(tmp_path / "w1.pem", certificate("w1", expiring_in(-1, now)))
    ca = write(tmp_path / "ca.pem", certificate("ca", expiring_in(20, now)))
    hostvars: dict[str, dict[str, Any]] = {
        REDIS: {"redis_tls": True, "redis_tls_source": "files", "redis_tls_ca_cert_file": ca},
        WORKER: {"celery_worker_redis_tls_cert_file": expired},
    }
    errors = bundle_certificates.bundle_supplied_certificate_errors(WORKER, GROUPS, hostvars)
    assert [e.split(" ")[0] for e in errors] == ["celery_worker_redis_tls_cert_file"]
    # The CA file is the Redis host's, named by its variable, on both sides; within the pki
    # role's default window (30 days), not within a window of 10 set for the worker.
    for host in (REDIS, WORKER):
        warnings = bundle_certificates.bundle_supplied_certificate_warnings(host, GROUPS, hostvars)
        assert [w.split(" ")[0] for w in warnings] == ["redis_tls_ca_cert_file"], host
    hostvars[WORKER]["pki_renew_within_days"] = 10
    assert bundle_certificates.bundle_supplied_certificate_warnings(WORKER, GROUPS, hostvars) == []
    # Without TLS from files nothing is read, not even a file that is not there.
    assert bundle_certificates.bundle_supplied_certificate_errors(REDIS, GROUPS, {REDIS: {}}) == []
