"""What each host needs from the bundle's CA (playbooks/filter_plugins/bundle_certificates.py),
without a lab: a Redis host a server certificate, a worker host a client certificate, each only
where its side's TLS is on with the bundle as the source."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import REPO

sys.path.insert(0, str(REPO / "playbooks/filter_plugins"))
import bundle_certificates  # a filter plugin file, not an installed module
from bundle_certificates import certificate_request, declared_defaults

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
    assert list(names) == ["bundle_certificate_request"]


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
