"""Broker and results apart: two servers on one host, each with its own policy and persistence.

The live-settings test re-runs the playbook: a setting Redis takes live is applied with CONFIG SET,
and the broker keeps running (same run_id) instead of being restarted.
"""

from __future__ import annotations

import re

import testinfra
from conftest import BROKER_PORT, RESULTS_PORT, Secrets, cli, deploy

testinfra_hosts = ["redis"]


def config(host: testinfra.host.Host, secrets: Secrets, name: str, port: int) -> str:
    lines = cli(host, "config", "get", name, user="admin", password=secrets.admin, port=port)
    values = lines.splitlines()
    assert values[0] == name, values
    return values[1] if len(values) > 1 else ""


def run_id(host: testinfra.host.Host, secrets: Secrets, port: int) -> str:
    info = cli(host, "info", "server", user="admin", password=secrets.admin, port=port)
    match = re.search(r"^run_id:(\w+)", info, re.MULTILINE)
    assert match, info
    return match.group(1)


def test_both_servers_run_under_their_own_units(host: testinfra.host.Host) -> None:
    assert host.service("redis-server").is_running
    assert host.service("redis-server@results").is_running
    assert host.service("redis-server@results").is_enabled
    assert host.file("/etc/redis/redis-results.conf").mode == 0o640


def test_results_server_evicts_and_keeps_nothing_on_disk(
    host: testinfra.host.Host, secrets: Secrets
) -> None:
    assert config(host, secrets, "maxmemory-policy", RESULTS_PORT) == "allkeys-lru"
    assert config(host, secrets, "maxmemory", RESULTS_PORT) == str(64 * 1024 * 1024)
    assert config(host, secrets, "appendonly", RESULTS_PORT) == "no"
    assert config(host, secrets, "save", RESULTS_PORT) == ""
    # The same TLS-only, mutual-TLS front door as the broker.
    assert config(host, secrets, "port", RESULTS_PORT) == "0"
    assert config(host, secrets, "tls-port", RESULTS_PORT) == str(RESULTS_PORT)
    assert config(host, secrets, "tls-auth-clients", RESULTS_PORT) == "yes"


def test_broker_server_keeps_noeviction_and_aof(
    host: testinfra.host.Host, secrets: Secrets
) -> None:
    assert config(host, secrets, "maxmemory-policy", BROKER_PORT) == "noeviction"
    assert config(host, secrets, "appendonly", BROKER_PORT) == "yes"


def test_results_server_has_the_same_users(host: testinfra.host.Host, secrets: Secrets) -> None:
    assert cli(host, "ping", port=RESULTS_PORT).startswith("NOAUTH")
    out = cli(host, "flushall", user="celery", password=secrets.celery, port=RESULTS_PORT)
    assert "NOPERM" in out, out


def test_live_setting_changes_without_a_restart(
    host: testinfra.host.Host, secrets: Secrets
) -> None:
    before = run_id(host, secrets, BROKER_PORT), run_id(host, secrets, RESULTS_PORT)
    live = '{"redis_maxmemory_mb": 200, "redis_loglevel": "warning"}'
    changed = deploy("--limit", "redis", "-e", live)
    assert changed.returncode == 0, changed.stdout[-3000:] + changed.stderr[-3000:]
    assert "Apply live Redis settings" in changed.stdout
    assert config(host, secrets, "maxmemory", BROKER_PORT) == str(200 * 1024 * 1024)
    assert config(host, secrets, "loglevel", BROKER_PORT) == "warning"
    # Written down too, so a later restart keeps it.
    assert host.file("/etc/redis/redis-live.conf").contains("^maxmemory 200mb$")
    restored = deploy("--limit", "redis")
    assert restored.returncode == 0, restored.stdout[-3000:] + restored.stderr[-3000:]
    assert config(host, secrets, "maxmemory", BROKER_PORT) == str(256 * 1024 * 1024)
    assert (run_id(host, secrets, BROKER_PORT), run_id(host, secrets, RESULTS_PORT)) == before
