"""Bad input for the redis role's security, persistence and memory settings.

Each case stops the run before any host changes, naming the variable and the fix;
tests/badinput.py has the harness.
"""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

import pytest
from badinput import assert_refused, run_validation, write_inventory
from certfiles import certificate, expiring_in, write

ACL = {
    "redis_auth_mode": "acl",
    "redis_acl_celery_password": "test-only-celery-0123456789",
    "redis_acl_monitor_password": "test-only-monitor-0123456789",
}

# (case id, host_vars for the redis host, text the failure must contain)
CASES: list[tuple[str, dict[str, Any], list[str]]] = [
    (
        "evicting policy on the broker",
        {"redis_maxmemory_policy": "volatile-lru", "redis_holds_broker": True},
        ["redis_maxmemory_policy", "redis_holds_broker", "noeviction"],
    ),
    (
        "maxmemory larger than the host's RAM",
        {"redis_maxmemory_mb": 10**8},
        ["redis_maxmemory_mb", "RAM", "leave it unset"],
    ),
    (
        "maxmemory 0 for derived",
        {"redis_maxmemory_mb": 0},
        ["redis_maxmemory_mb is 0", "no limit at all", "leave redis_maxmemory_mb unset"],
    ),
    (
        "TLS on without certificates",
        {"redis_tls": True, "redis_tls_source": "files"},
        ["redis_tls_cert_file", "redis_tls_key_file", "redis_tls_source: bundle"],
    ),
    (
        "TLS certificate file missing",
        {
            "redis_tls": True,
            "redis_tls_source": "files",
            "redis_tls_ca_cert_file": "/nonexistent/ca.crt",
            "redis_tls_cert_file": "/nonexistent/redis.crt",
            "redis_tls_key_file": "/nonexistent/redis.key",
        },
        ["redis_tls_ca_cert_file", "existing files on the controller"],
    ),
    (
        "password in a world-readable file",
        {"redis_config_mode": "0644"},
        ["redis_config_mode", "every user", "0640"],
    ),
    (
        "unknown auth mode",
        {"redis_auth_mode": "none"},
        ["redis_auth_mode", "requirepass"],
    ),
    (
        "acl mode without the Celery user's password",
        {**ACL, "redis_acl_celery_password": ""},
        ["redis_acl_celery_password", "vault_redis_celery_password"],
    ),
    (
        "acl mode with a short monitor password",
        {**ACL, "redis_acl_monitor_password": "short"},
        ["redis_acl_monitor_password", "16 characters"],
    ),
    (
        "previous password in requirepass mode",
        {"redis_password_previous": "test-only-old-admin-0123456789"},
        ["redis_password_previous", "requirepass holds one password", "redis_auth_mode: acl"],
    ),
    (
        "previous password equal to the current one",
        {**ACL, "redis_acl_celery_password_previous": ACL["redis_acl_celery_password"]},
        ["redis_acl_celery_password_previous is the same as redis_acl_celery_password"],
    ),
    (
        "acl user named default",
        {**ACL, "redis_acl_celery_user": "default"},
        ["redis_acl_celery_user", "'default'"],
    ),
    (
        "acl key prefix with a glob",
        {**ACL, "redis_acl_key_prefix": "*"},
        ["redis_acl_key_prefix", "for example celery:"],
    ),
    (
        "acl command that is not a command name",
        {**ACL, "redis_acl_celery_commands": ["get", "+@all"]},
        ["redis_acl_celery_commands", "+@all"],
    ),
    (
        "acl channel with a space",
        {**ACL, "redis_acl_celery_channels": ["shop:/0.events other"]},
        ["redis_acl_celery_channels", "'shop:/0.events other'", "without spaces"],
    ),
    (
        "acl channel that opens every channel",
        {**ACL, "redis_acl_celery_channels": ["*"]},
        ["redis_acl_celery_channels", "not * alone"],
    ),
    (
        "acl channel written as an ACL rule",
        {**ACL, "redis_acl_celery_channels": ["&shop:/0.events"]},
        ["redis_acl_celery_channels", "a leading &"],
    ),
    (
        "keyspace event flag Redis does not know",
        {"redis_notify_keyspace_events": "Klq"},
        ["redis_notify_keyspace_events (Klq)", "for example Kl"],
    ),
    (
        "results server on the broker's port",
        {"redis_results_server": True, "redis_results_port": 6379},
        ["redis_results_port", "other than redis_port"],
    ),
    (
        "broker and results servers larger than the host's RAM together",
        {
            "redis_results_server": True,
            "redis_maxmemory_mb": None,
            "redis_maxmemory_percent": 80,
            "redis_results_maxmemory_mb": None,
            "redis_results_maxmemory_percent": 30,
        },
        ["redis_results_maxmemory_mb", "not below this host's RAM", "Lower one of them"],
    ),
    (
        "unknown results policy",
        {"redis_results_server": True, "redis_results_maxmemory_policy": "lru"},
        ["redis_results_maxmemory_policy", "allkeys-lru"],
    ),
    (
        "TLS 1.1",
        {"redis_tls": True, "redis_tls_protocols": ["TLSv1.1", "TLSv1.2"]},
        ["redis_tls_protocols", "TLSv1.2"],
    ),
    (
        "bind entry that is not an IP address",
        {"redis_bind": ["127.0.0.1", "redis1.example.internal"]},
        ["redis_bind: 'redis1.example.internal' is not an IP address", "leave redis_bind empty"],
    ),
    (
        "save point that is not two numbers",
        {"redis_persistence": "rdb", "redis_save_points": ["1h 1"]},
        ["redis_save_points: '1h 1' is not entries of two whole numbers"],
    ),
]


def test_good_acl_and_tls_inventory_passes(tmp_path: Path) -> None:
    proc = run_validation(write_inventory(tmp_path, {**ACL, "redis_tls": True}, {}, 0))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


@pytest.mark.parametrize(
    ("redis_vars", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_bad_redis_input_is_refused(
    tmp_path: Path, redis_vars: dict[str, Any], expected: list[str]
) -> None:
    proc = run_validation(write_inventory(tmp_path, redis_vars, {}, 0))
    assert_refused(proc, expected)


def supplied_tls(root: Path, ca_days: float, cert_days: float) -> tuple[dict[str, Any], ...]:
    """host_vars for the Redis and the worker host with TLS from files: the CA's and the Redis
    host's certificate end in that many days, the worker's in 900."""
    now = datetime.datetime.now(datetime.UTC)
    root.mkdir()
    key = root / "any.key"
    key.write_text("not read by validation\n")

    def pem(name: str, days: float) -> str:
        return write(root / f"{name}.pem", certificate(name, expiring_in(days, now)))

    server = {
        "redis_tls": True,
        "redis_tls_source": "files",
        "redis_tls_ca_cert_file": pem("ca", ca_days),
        "redis_tls_cert_file": pem("r", cert_days),
        "redis_tls_key_file": str(key),
    }
    worker = {
        "celery_worker_redis_tls_cert_file": pem("w", 900),
        "celery_worker_redis_tls_key_file": str(key),
    }
    return server, worker


def test_an_expired_supplied_certificate_stops_the_run(tmp_path: Path) -> None:
    server, worker = supplied_tls(tmp_path / "tls", ca_days=900, cert_days=-2)
    proc = run_validation(write_inventory(tmp_path / "inventory", server, worker, 0))
    refused = f"redis_tls_cert_file ({server['redis_tls_cert_file']}): the certificate CN=r expired"
    assert_refused(proc, [refused, "Replace the file with a renewed certificate"])


def test_a_supplied_certificate_near_its_end_is_reported_and_the_run_goes_on(
    tmp_path: Path,
) -> None:
    server, worker = supplied_tls(tmp_path / "tls", ca_days=10.5, cert_days=900)
    proc = run_validation(write_inventory(tmp_path / "inventory", server, worker, 0))
    output = " ".join((proc.stdout + proc.stderr).split())
    assert proc.returncode == 0, output[-3000:]
    # On the Redis host, and on the worker host, which trusts the same CA file.
    ca = server["redis_tls_ca_cert_file"]
    assert output.count(f"redis_tls_ca_cert_file ({ca}): the certificate CN=ca") == 2, output
    assert "in 10 days (pki_renew_within_days is 30)" in output
    assert "CN=r " not in output
    assert "CN=w " not in output
