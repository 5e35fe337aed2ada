"""The one wiring between the sides: the workers follow the Redis host's own settings
(roles/celery_worker/filter_plugins/celery_worker_redis.py), and a hand-set value that
contradicts the server stops the run before any host changes."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from badinput import assert_refused, run_validation, write_inventory
from conftest import REPO

sys.path.insert(0, str(REPO / "roles/celery_worker/filter_plugins"))
import celery_worker_redis  # the role's plugin, not an installed module
from celery_worker_redis import (
    SETTINGS,
    celery_worker_redis_mismatch_errors,
    celery_worker_redis_setting,
    redis_defaults,
)

GROUPS = {"redis": ["cache-a.example.internal"], "celery_workers": ["w1"]}


def derived(server: dict[str, Any]) -> dict[str, Any]:
    hostvars = {"cache-a.example.internal": server}
    return {name: celery_worker_redis_setting("redis", name, GROUPS, hostvars) for name in SETTINGS}


def test_a_server_at_the_redis_roles_defaults() -> None:
    assert derived({"redis_password": "pw"}) == {
        "host": "cache-a.example.internal",
        "port": 6379,
        "result_port": None,
        "broker_db": 0,
        "username": "",
        "password": "pw",
        "key_prefix": "",
        "tls": False,
        "tls_source": "bundle",
        "tls_ca_cert_file": "",
        "sentinel_port": 26379,
        "sentinel_master_name": "bundle",
        "publish_replicas": 1,
    }


def test_acl_tls_and_a_results_server_follow_the_redis_host() -> None:
    server = {
        "redis_password": "admin-pw",
        "redis_auth_mode": "acl",
        "redis_acl_celery_user": "jobs",
        "redis_acl_celery_password": "jobs-pw",
        "redis_acl_key_prefix": "shop:",
        "redis_acl_celery_broker_db": 2,
        "redis_port": 7000,
        "redis_results_server": True,
        "redis_results_port": 7001,
        "redis_tls": True,
        "redis_tls_source": "files",
        "redis_tls_ca_cert_file": "/srv/pki/ca.pem",
        "redis_sentinel_port": 26380,
        "redis_sentinel_master_name": "shop",
        "redis_min_replicas_to_write": 2,
    }
    assert derived(server) == {
        "host": "cache-a.example.internal",
        "port": 7000,
        "result_port": 7001,
        "broker_db": 2,
        "username": "jobs",
        "password": "jobs-pw",
        "key_prefix": "shop:",
        "tls": True,
        "tls_source": "files",
        "tls_ca_cert_file": "/srv/pki/ca.pem",
        "sentinel_port": 26380,
        "sentinel_master_name": "shop",
        "publish_replicas": 2,
    }


def test_only_the_setting_asked_for_is_read() -> None:
    # hostvars template a secret when it is read: a vault variable the run does not need (the
    # ACL password in requirepass mode) must not be touched.
    class Strict(dict[str, Any]):
        def __getitem__(self, name: str) -> object:
            if name == "redis_acl_celery_password":
                raise AssertionError("read the ACL password in requirepass mode")
            return super().__getitem__(name)

        def __contains__(self, name: object) -> bool:
            return name != "redis_acl_celery_password" and super().__contains__(name)

    hostvars = {"cache-a.example.internal": Strict(redis_password="pw")}
    assert celery_worker_redis_setting("redis", "password", GROUPS, hostvars) == "pw"


def test_the_fallbacks_are_the_redis_roles_declared_defaults() -> None:
    spec = yaml.safe_load((REPO / "roles/redis/meta/argument_specs.yml").read_text())
    options = spec["argument_specs"]["main"]["options"]
    defaults = redis_defaults()
    for name in ("redis_port", "redis_results_port", "redis_tls", "redis_acl_key_prefix"):
        assert defaults[name] == options[name]["default"], name


def test_templated_defaults_are_left_out(tmp_path: Path) -> None:
    # A template is meaningless outside the role that renders it.
    options = {"redis_a": {"default": "{{ role_path }}/x"}, "redis_b": {"default": 1}}
    spec = tmp_path / "argument_specs.yml"
    spec.write_text(yaml.safe_dump({"argument_specs": {"main": {"options": options}}}))
    assert redis_defaults(spec) == {"redis_b": 1}


def test_an_empty_group_is_refused_with_the_fix() -> None:
    with pytest.raises(ValueError, match="no host in group 'redis'"):
        celery_worker_redis_setting("redis", "host", {"redis": []}, {})


def test_an_unknown_setting_is_a_bug() -> None:
    with pytest.raises(ValueError, match="unknown setting 'hots'"):
        celery_worker_redis_setting("redis", "hots", GROUPS, {})


def client(**overrides: object) -> dict[str, object]:
    settings = {"host": "cache-a.example.internal", "tls": True, "tls_source": "bundle"}
    return settings | {"tls_ca_cert_file": ""} | overrides


TLS_SERVER = {"cache-a.example.internal": {"redis_tls": True}}
FILES_SERVER = {
    "redis_tls": True,
    "redis_tls_source": "files",
    "redis_tls_ca_cert_file": "/b/ca.pem",
}


@pytest.mark.parametrize(
    ("client_settings", "server", "expected"),
    [
        (client(), TLS_SERVER, []),
        (client(tls=False), TLS_SERVER, ["celery_worker_redis_tls is False but redis_tls is True"]),
        (client(), {"cache-a.example.internal": {}}, ["celery_worker_redis_tls is True"]),
        (client(tls_source="files"), TLS_SERVER, ["celery_worker_redis_tls_source is 'files'"]),
        (
            client(tls_source="files", tls_ca_cert_file="/a/ca.pem"),
            {"cache-a.example.internal": FILES_SERVER},
            ["celery_worker_redis_tls_ca_cert_file ('/a/ca.pem') is not redis_tls_ca_cert_file"],
        ),
        # Another Redis than the group's (set by hand): nothing to compare with.
        (client(host="external.example.com", tls=False), TLS_SERVER, []),
    ],
    ids=["agree", "tls off", "tls on", "source", "ca", "external"],
)
def test_tls_settings_that_contradict_the_server_are_refused(
    client_settings: dict[str, object], server: dict[str, Any], expected: list[str]
) -> None:
    errors = celery_worker_redis_mismatch_errors(client_settings, "redis", GROUPS, server)
    assert len(errors) == len(expected), errors
    for error, text in zip(errors, expected, strict=True):
        assert text in error
        assert "unset" in error  # the fix


def test_the_role_defaults_call_the_plugin_for_every_derived_setting() -> None:
    defaults = (REPO / "roles/celery_worker/defaults/main.yml").read_text()
    for name in SETTINGS:
        assert f"celery_worker_redis_setting('{name}'" in defaults, name
    assert celery_worker_redis.FilterModule().filters()


def test_a_tls_mismatch_stops_the_run_before_any_host_changes(tmp_path: Path) -> None:
    worker_vars = {"celery_worker_redis_tls": False}
    inventory = write_inventory(tmp_path, {"redis_tls": True}, worker_vars, 0)
    assert_refused(
        run_validation(inventory),
        ["celery_worker_redis_tls is False but redis_tls is True on bad-redis", "leave"],
    )


def test_an_inventory_that_sets_only_the_servers_switches_passes(tmp_path: Path) -> None:
    # No celery_worker_redis_* anywhere: the workers follow bad-redis's ACL, TLS and results.
    redis_vars = {
        "redis_auth_mode": "acl",
        "redis_acl_celery_password": "test-only-celery-0123456789",
        "redis_acl_monitor_password": "test-only-monitor-0123456789",
        "redis_tls": True,
        "redis_results_server": True,
    }
    proc = run_validation(write_inventory(tmp_path, redis_vars, {}, 0))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def test_a_group_of_several_redis_hosts_gives_the_workers_its_sentinels() -> None:
    from celery_worker_redis import celery_worker_redis_sentinel_hosts

    groups = {"redis": ["r1", "r2", "r3"]}
    assert celery_worker_redis_sentinel_hosts("redis", groups) == ["r1", "r2", "r3"]
    assert celery_worker_redis_sentinel_hosts("redis", {"redis": ["r1"]}) == []
    with pytest.raises(ValueError, match="celery_worker_redis_group"):
        celery_worker_redis_sentinel_hosts("redis", {"redis": []})
