"""The roles' own rules (roles/*/tasks/validate.yml call them as filters), no lab.

Each rule with an accepted and a refused input and the exact message a user sees:
roles/celery_worker/filter_plugins/bundle_worker_validate.py (settings, password, the play's
serial), roles/redis/filter_plugins/bundle_redis_validate.py (settings, passwords, the
memory limits) and roles/pki/filter_plugins/bundle_pki_validate.py (validity periods and the
renewal window). The instances' per-node rules are in test_validate_plugins.py.
"""

from __future__ import annotations

import base64
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import REPO

sys.path.insert(0, str(REPO / "roles/celery_worker/filter_plugins"))
sys.path.insert(0, str(REPO / "roles/redis/filter_plugins"))
sys.path.insert(0, str(REPO / "roles/pki/filter_plugins"))
# Filter plugin files, not installed modules.
import bundle_pki_validate
import bundle_redis_validate
import bundle_worker_validate

# --- celery_worker ------------------------------------------------------------------------

# A worker host's variables as the role's defaults template them (the bundled release, a
# Redis host at its defaults, one vCPU).
WORKER: dict[str, Any] = {
    "celery_worker_release": {"id": "taskapp-1.0-abc", "archive": "/tmp/taskapp.tar.gz"},
    "celery_worker_redis_group": "redis",
    "celery_worker_redis_host": "redis1",
    "celery_worker_redis_port": 6379,
    "celery_worker_redis_result_host": None,
    "celery_worker_redis_result_port": None,
    "celery_worker_concurrency": None,
    "celery_worker_pool": None,
    "celery_worker_nodes": None,
    "celery_worker_io_concurrency_multiplier": 4,
    "celery_worker_timeout_stop_sec": None,
    "celery_worker_default_queue": "celery",
    "celery_worker_task_routes": {},
    "celery_worker_beat_schedule": {},
    "celery_worker_soft_time_limit": 300,
    "celery_worker_time_limit": 330,
    "celery_worker_visibility_timeout": 3600,
    "celery_worker_prefetch_multiplier": 1,
    "celery_worker_instances": [{"name": "default"}],
    "__celery_worker_nodes": [{"name": "default"}],
    "celery_worker_serial": 1,
}

DERIVE_STOP = (
    "derive it from celery_worker_time_limit, celery_worker_soft_shutdown_timeout and"
    " celery_worker_stop_margin."
)
SERIAL = (
    "celery_worker_serial must be a number of hosts (at least 1), a percentage of them from 1%"
    " to 100% (25%), or a list of those (got {}): playbooks/workers.yml deploys that many"
    " worker hosts at a time. Leave it unset for one at a time."
)

# (case id, changes to WORKER, messages)
WORKER_CASES: list[tuple[str, dict[str, Any], list[str]]] = [
    ("the role's defaults", {}, []),
    (
        "sizes and ports set",
        {
            "celery_worker_redis_result_host": "results.example.internal",
            "celery_worker_redis_result_port": 6380,
            "celery_worker_concurrency": 4,
            "celery_worker_pool": "threads",
            "celery_worker_nodes": 2,
            "celery_worker_timeout_stop_sec": 400,
            "celery_worker_task_routes": {"taskapp.fetch_url": "io"},
            "celery_worker_beat_schedule": {"tick": {"task": "taskapp.record", "every": 10}},
        },
        [],
    ),
    (
        "no release",
        {"celery_worker_release": {}},
        [
            "celery_worker_release is not set: run the app_release role first"
            " (ansible-playbook deploy.yml does)."
        ],
    ),
    (
        "empty redis host",
        {"celery_worker_redis_host": ""},
        [
            "celery_worker_redis_host is empty. Leave it unset to reach the first host of group"
            " redis, or name the Redis host the workers reach."
        ],
    ),
    (
        "port out of range",
        {"celery_worker_redis_port": 65536},
        ["celery_worker_redis_port must be between 1 and 65535 (got 65536)."],
    ),
    (
        "empty result host",
        {"celery_worker_redis_result_host": ""},
        [
            "celery_worker_redis_result_host is empty, which is not how the bundle says 'derive"
            " it': leave celery_worker_redis_result_host unset (remove it, or set it to null) to"
            " use celery_worker_redis_host."
        ],
    ),
    (
        "result port 0",
        {"celery_worker_redis_result_port": 0},
        [
            "celery_worker_redis_result_port is 0, which is not how the bundle says 'derive it':"
            " leave celery_worker_redis_result_port unset (remove it, or set it to null) to use"
            " celery_worker_redis_port."
        ],
    ),
    (
        "result port out of range",
        {"celery_worker_redis_result_port": -1},
        [
            "celery_worker_redis_result_port must be between 1 and 65535, or unset for"
            " celery_worker_redis_port (got -1)."
        ],
    ),
    (
        "zero concurrency",
        {"celery_worker_concurrency": 0},
        [
            "celery_worker_concurrency must be at least 1 (got 0): a worker with no processes"
            " consumes nothing. Leave it unset for one process per vCPU."
        ],
    ),
    (
        "unknown pool",
        {"celery_worker_pool": "gevent"},
        [
            "celery_worker_pool must be prefork, threads or solo (got gevent). Leave it unset to"
            " follow celery_worker_kind (solo nodes for short tasks)."
        ],
    ),
    (
        "zero nodes",
        {"celery_worker_nodes": 0},
        [
            "celery_worker_nodes must be at least 1 (got 0). Leave it unset to derive it from"
            " the vCPUs and celery_worker_kind."
        ],
    ),
    (
        "zero io multiplier",
        {"celery_worker_io_concurrency_multiplier": 0},
        ["celery_worker_io_concurrency_multiplier must be at least 1 (got 0)."],
    ),
    (
        "stop timeout 0",
        {"celery_worker_timeout_stop_sec": 0},
        [
            "celery_worker_timeout_stop_sec is 0, which is not how the bundle says 'derive it':"
            " leave celery_worker_timeout_stop_sec unset (remove it, or set it to null) to "
            + DERIVE_STOP
        ],
    ),
    (
        "negative stop timeout",
        {"celery_worker_timeout_stop_sec": -5},
        [
            "celery_worker_timeout_stop_sec must be at least 1 second (got -5), or unset to"
            " derive it."
        ],
    ),
    (
        "empty default queue",
        {"celery_worker_default_queue": ""},
        ["celery_worker_default_queue is empty: name the queue of tasks no route names."],
    ),
    (
        "route to an empty queue",
        {"celery_worker_task_routes": {"taskapp.x": ""}},
        [
            "celery_worker_task_routes must map each task name to a queue name"
            " (got {'taskapp.x': ''})."
        ],
    ),
    (
        "route to a list",
        {"celery_worker_task_routes": {"taskapp.x": ["io"]}},
        [
            "celery_worker_task_routes must map each task name to a queue name"
            " (got {'taskapp.x': ['io']})."
        ],
    ),
    (
        "schedule entry without every",
        {"celery_worker_beat_schedule": {"tick": {"task": "t"}}},
        [
            "celery_worker_beat_schedule entries need a task and every (seconds, at least 1), for"
            " example tick: {task: myapp.tasks.cleanup, every: 60}"
            " (got {'tick': {'task': 't'}})."
        ],
    ),
    (
        "schedule entry without task, every 0",
        {"celery_worker_beat_schedule": {"tick": {"every": 0}}},
        [
            "celery_worker_beat_schedule entries need a task and every (seconds, at least 1), for"
            " example tick: {task: myapp.tasks.cleanup, every: 60} (got {'tick': {'every': 0}})."
        ],
    ),
    (
        "soft limit at the hard limit",
        {"celery_worker_soft_time_limit": 330},
        [
            "celery_worker_soft_time_limit (330) must be below celery_worker_time_limit (330), or"
            " tasks never get the chance to clean up."
        ],
    ),
    (
        "hard limit at the visibility timeout",
        {"celery_worker_soft_time_limit": 3000, "celery_worker_time_limit": 3600},
        [
            "celery_worker_time_limit (3600) must be below celery_worker_visibility_timeout"
            " (3600): a task still running when the visibility timeout expires is delivered"
            " again and runs twice. Raise the visibility timeout or lower the time limit."
        ],
    ),
    (
        "zero prefetch",
        {"celery_worker_prefetch_multiplier": 0},
        ["celery_worker_prefetch_multiplier must be at least 1 (got 0)."],
    ),
    (
        "no instances",
        {"celery_worker_instances": [], "__celery_worker_nodes": []},
        ["celery_worker_instances is empty: a worker host needs at least one instance."],
    ),
    (
        "duplicate instance names",
        {
            "celery_worker_instances": [{"name": "a"}, {"name": "a"}],
            "__celery_worker_nodes": [{"name": "a"}, {"name": "b"}],
        },
        ["celery_worker_instances has duplicate names: ['a', 'a']."],
    ),
    (
        "node names collide",
        {
            "celery_worker_instances": [{"name": "a", "nodes": 2}, {"name": "a-2"}],
            "__celery_worker_nodes": [{"name": "a"}, {"name": "a-2"}, {"name": "a-2"}],
        },
        [
            "celery_worker_instances: two worker nodes share a name (['a', 'a-2', 'a-2']); node N"
            " of instance NAME is NAME-N, so rename the instance that ends in -N."
        ],
    ),
    ("serial 25%", {"celery_worker_serial": "25%"}, []),
    (
        "beat on the host of group celery_beat",
        {"inventory_hostname": "w1", "groups": {"celery_beat": ["w1"]}, "celery_worker_beat": True},
        [],
    ),
    (
        "beat set outside group celery_beat",
        {"inventory_hostname": "w2", "groups": {"celery_beat": ["w1"]}, "celery_worker_beat": True},
        [
            "celery_worker_beat is true on w2, which is not in group celery_beat: beat runs on"
            " the host of that group, which validation holds at one, so two beats never send"
            " every periodic task twice. Remove celery_worker_beat from the inventory and put"
            " the beat host in group celery_beat."
        ],
    ),
    (
        "beat turned off on the beat host",
        {
            "inventory_hostname": "w1",
            "groups": {"celery_beat": ["w1"]},
            "celery_worker_beat": False,
        },
        [
            "celery_worker_beat is false on w1, which is in group celery_beat: beat runs on"
            " the host of that group, which validation holds at one, so two beats never send"
            " every periodic task twice. Remove celery_worker_beat from the inventory and put"
            " the beat host in group celery_beat."
        ],
    ),
    ("serial 100%", {"celery_worker_serial": "100%"}, []),
    ("serial 2", {"celery_worker_serial": 2}, []),
    ("serial 2 given with -e", {"celery_worker_serial": "2"}, []),
    ("serial batches", {"celery_worker_serial": [1, "50%", 10]}, []),
    (
        "one release kept",
        {"celery_worker_releases_kept": 1},
        [
            "celery_worker_releases_kept must be at least 2 (got 1): the current release and the"
            " one before it, which a failed deploy's rollback and playbooks/rollback.yml go back"
            " to."
        ],
    ),
    ("serial unset", {"celery_worker_serial": None} | {}, [SERIAL.format("None")]),
    ("serial 0", {"celery_worker_serial": 0}, [SERIAL.format("0")]),
    ("serial 0%", {"celery_worker_serial": "0%"}, [SERIAL.format("'0%'")]),
    ("serial 150%", {"celery_worker_serial": "150%"}, [SERIAL.format("'150%'")]),
    ("serial 12.5%", {"celery_worker_serial": "12.5%"}, [SERIAL.format("'12.5%'")]),
    ("serial a fraction", {"celery_worker_serial": 1.5}, [SERIAL.format("1.5")]),
    ("serial a word", {"celery_worker_serial": "all"}, [SERIAL.format("'all'")]),
    ("serial true", {"celery_worker_serial": True}, [SERIAL.format("True")]),
    ("serial empty list", {"celery_worker_serial": []}, [SERIAL.format("[]")]),
    ("serial list with 0", {"celery_worker_serial": [1, 0]}, [SERIAL.format("[1, 0]")]),
]


@pytest.mark.parametrize(
    ("changes", "expected"), [c[1:] for c in WORKER_CASES], ids=[c[0] for c in WORKER_CASES]
)
def test_worker_settings_errors(changes: dict[str, Any], expected: list[str]) -> None:
    assert bundle_worker_validate.bundle_worker_settings_errors(WORKER | changes) == expected


def test_serial_left_out_is_the_roles_default() -> None:
    # The validate play reaches the rule without the role's defaults only when -e sets none.
    variables = {k: v for k, v in WORKER.items() if k != "celery_worker_serial"}
    assert bundle_worker_validate.settings_errors(variables) == []


def test_wrong_types_are_refused_not_raised() -> None:
    # The validate play's type check names the type first; the role run alone still refuses.
    odd = {name: "x" for name in WORKER} | {"celery_worker_pool": ["prefork"]}
    errors = bundle_worker_validate.settings_errors(odd)
    assert len(errors) >= 10, errors


@pytest.mark.parametrize(
    ("password", "refused"),
    [("test-only-throwaway-0123456789", False), (12345678, False), ("", True), (None, True)],
)
def test_worker_password_errors(password: object, refused: bool) -> None:
    errors = bundle_worker_validate.bundle_worker_password_errors(password)
    expected = (
        "celery_worker_redis_password is empty. It follows the Redis host's password for the"
        " workers: set redis_password (redis_auth_mode requirepass) or redis_acl_celery_password"
        " (acl) from the inventory's vault file, for example"
        ' redis_acl_celery_password: "{{ vault_redis_celery_password }}".'
    )
    assert errors == ([expected] if refused else [])


# --- redis ----------------------------------------------------------------------------------

RAM = 2000  # MiB, the host's memtotal_mb fact
GOOD_PASSWORD = "test-only-throwaway-0123456789"
# A Redis host's variables at the role's defaults.
REDIS: dict[str, Any] = {
    "redis_password": GOOD_PASSWORD,
    "redis_port": 6379,
    "redis_auth_mode": "requirepass",
    "redis_acl_admin_user": "admin",
    "redis_acl_celery_user": "celery",
    "redis_acl_celery_password": "",
    "redis_acl_monitor_user": "monitor",
    "redis_acl_monitor_password": "",
    "redis_acl_key_prefix": "celery:",
    "redis_acl_celery_channels": [],
    "redis_acl_celery_commands": ["get", "set", "client|setname", "script|load"],
    "redis_config_mode": "0640",
    "redis_tls": False,
    "redis_tls_source": "bundle",
    "redis_tls_ca_cert_file": "",
    "redis_tls_cert_file": "",
    "redis_tls_key_file": "",
    "redis_maxmemory_mb": None,
    "redis_maxmemory_percent": 50,
    "redis_maxmemory_policy": "noeviction",
    "redis_holds_broker": True,
    "redis_results_server": False,
    "redis_results_port": 6380,
    "redis_results_maxmemory_mb": None,
    "redis_results_maxmemory_percent": 20,
    "redis_notify_keyspace_events": "",
    "redis_databases": 16,
    "redis_maxclients": 10000,
}
ACL = {
    "redis_auth_mode": "acl",
    "redis_acl_celery_password": "test-only-celery-0123456789",
    "redis_acl_monitor_password": "test-only-monitor-0123456789",
}
RESULTS = {"redis_results_server": True}
TLS_MISSING = (
    "redis_tls is on but the certificates cannot be found. With redis_tls_source: files, set"
    " redis_tls_ca_cert_file, redis_tls_cert_file and redis_tls_key_file to existing files on the"
    " controller (got {}); or set redis_tls_source: bundle to have the bundle issue them from"
    " its own CA (playbooks/certificates.yml)."
)


def zero(name: str, percent: str) -> str:
    return (
        f"{name} is 0, which is not how the bundle says 'derive it' (Redis reads maxmemory 0 as"
        f" no limit at all): leave {name} unset (remove it, or set it to null) to derive it from"
        f" {percent} of the host's RAM."
    )


# (case id, changes to REDIS, messages)
REDIS_CASES: list[tuple[str, dict[str, Any], list[str]]] = [
    ("the role's defaults", {}, []),
    (
        "everything on",
        ACL
        | RESULTS
        | {
            "redis_maxmemory_mb": 900,
            "redis_results_maxmemory_mb": 300,
            "redis_acl_celery_channels": ["shop:/0.events.*"],
            "redis_notify_keyspace_events": "Kl",
            "redis_tls": True,
            "redis_config_mode": "600",
        },
        [],
    ),
    (
        "port out of range",
        {"redis_port": 0},
        ["redis_port must be between 1 and 65535 (got 0)."],
    ),
    (
        "percent above 90",
        {"redis_maxmemory_percent": 95},
        ["redis_maxmemory_percent must be between 1 and 90 (got 95)."],
    ),
    (
        "maxmemory 0",
        {"redis_maxmemory_mb": 0},
        [zero("redis_maxmemory_mb", "redis_maxmemory_percent")],
    ),
    (
        "negative maxmemory",
        {"redis_maxmemory_mb": -1},
        [
            "redis_maxmemory_mb must be a size in MiB (at least 1), or unset to derive it from"
            " RAM (got -1)."
        ],
    ),
    (
        "maxmemory at the RAM",
        {"redis_maxmemory_mb": RAM},
        [
            "redis_maxmemory_mb (2000) is not below this host's RAM (2000 MiB): Redis would be"
            " killed by the OOM killer before it refused a write. Lower it or leave it unset to"
            " derive it."
        ],
    ),
    (
        "results percent 0",
        {"redis_results_maxmemory_percent": 0},
        ["redis_results_maxmemory_percent must be between 1 and 90 (got 0)."],
    ),
    (
        "results maxmemory 0",
        {"redis_results_maxmemory_mb": 0},
        [zero("redis_results_maxmemory_mb", "redis_results_maxmemory_percent")],
    ),
    (
        "negative results maxmemory",
        {"redis_results_maxmemory_mb": -3},
        [
            "redis_results_maxmemory_mb must be a size in MiB (at least 1), or unset to derive it"
            " from RAM (got -3)."
        ],
    ),
    (
        "both servers beyond the RAM, derived",
        RESULTS | {"redis_maxmemory_percent": 80, "redis_results_maxmemory_percent": 30},
        [
            "redis_maxmemory_mb (1600) plus redis_results_maxmemory_mb (600) is not below this"
            " host's RAM (2000 MiB): with redis_results_server both servers share the host."
            " Lower one of them (or their _percent)."
        ],
    ),
    (
        "both servers beyond the RAM, set",
        RESULTS | {"redis_maxmemory_mb": 1500, "redis_results_maxmemory_mb": 500},
        [
            "redis_maxmemory_mb (1500) plus redis_results_maxmemory_mb (500) is not below this"
            " host's RAM (2000 MiB): with redis_results_server both servers share the host."
            " Lower one of them (or their _percent)."
        ],
    ),
    (
        "the same sizes without a results server",
        {"redis_maxmemory_mb": 1500, "redis_results_maxmemory_mb": 500},
        [],
    ),
    (
        "results server on the broker's port",
        RESULTS | {"redis_results_port": 6379},
        [
            "redis_results_port (6379) must be a port between 1 and 65535 other than redis_port"
            " (6379): the results server listens beside the broker."
        ],
    ),
    ("results port unused without the server", {"redis_results_port": 6379}, []),
    (
        "one database",
        {"redis_databases": 1},
        ["redis_databases must be between 2 and 1024 (got 1); the app uses db 0 and 1."],
    ),
    (
        "no clients",
        {"redis_maxclients": 0},
        ["redis_maxclients must be at least 1 (got 0)."],
    ),
    (
        "evicting policy on the broker",
        {"redis_maxmemory_policy": "allkeys-lru"},
        [
            "redis_maxmemory_policy is allkeys-lru but this server holds the Celery broker"
            " (redis_holds_broker: true). An evicting policy deletes queued tasks while reporting"
            " success. Use noeviction, or set redis_holds_broker: false on a results-only"
            " server."
        ],
    ),
    (
        "evicting policy on a results-only server",
        {"redis_maxmemory_policy": "allkeys-lru", "redis_holds_broker": False},
        [],
    ),
    (
        "config readable by others",
        {"redis_config_mode": "0644"},
        [
            "redis_config_mode is 0644: redis.conf and the aclfile hold the password (or its"
            " hashes), and this mode would let every user on the host read them. Use 0640 (redis"
            " and its group) or 0600."
        ],
    ),
    (
        "config mode not octal",
        {"redis_config_mode": "rw-r-----"},
        [
            "redis_config_mode is rw-r-----: redis.conf and the aclfile hold the password (or its"
            " hashes), and this mode would let every user on the host read them. Use 0640 (redis"
            " and its group) or 0600."
        ],
    ),
    (
        "acl user named default",
        ACL | {"redis_acl_celery_user": "default"},
        [
            "redis_acl_admin_user, redis_acl_celery_user and redis_acl_monitor_user must be three"
            " different names of letters, digits, '.', '-' or '_', none of them 'default'"
            " (got ['admin', 'default', 'monitor'])."
        ],
    ),
    (
        "acl users the same",
        ACL | {"redis_acl_monitor_user": "admin"},
        [
            "redis_acl_admin_user, redis_acl_celery_user and redis_acl_monitor_user must be three"
            " different names of letters, digits, '.', '-' or '_', none of them 'default'"
            " (got ['admin', 'celery', 'admin'])."
        ],
    ),
    ("acl user named default in requirepass mode", {"redis_acl_celery_user": "default"}, []),
    (
        "acl key prefix with a glob",
        ACL | {"redis_acl_key_prefix": "*"},
        [
            "redis_acl_key_prefix (*) must be non-empty and hold only letters, digits and . : - _"
            " (it becomes an ACL key pattern); for example celery:."
        ],
    ),
    (
        "acl command that is not a command name",
        ACL | {"redis_acl_celery_commands": ["get", "+@all", "GET"]},
        [
            "redis_acl_celery_commands holds names that are not Redis commands (['+@all', 'GET']):"
            " write lower-case command names, subcommands as container|sub (script|load)."
        ],
    ),
    (
        "acl channels that cannot be rules",
        ACL | {"redis_acl_celery_channels": ["ok:*", "a b", "*", "&x", "x\ny"]},
        [
            "redis_acl_celery_channels holds entries that cannot be ACL channel rules"
            " (['a b', '*', '&x', 'x\\ny']): write each channel or pattern as the client sends it,"
            " without spaces, control characters or a leading &, and not * alone (that would open"
            " every channel); for example myapp:/0.events.*."
        ],
    ),
    (
        "keyspace flag Redis does not know",
        {"redis_notify_keyspace_events": "Klq"},
        [
            "redis_notify_keyspace_events (Klq) holds letters that are not Redis's"
            " notify-keyspace-events flags: use K, E, g, $, l, s, h, z, x, e, t, m, d, n and A"
            " (for example Kl), or leave it empty."
        ],
    ),
    (
        "TLS from files, none named",
        {"redis_tls": True, "redis_tls_source": "files"},
        [TLS_MISSING.format("'', '', ''")],
    ),
    (
        "TLS from files that do not exist",
        {
            "redis_tls": True,
            "redis_tls_source": "files",
            "redis_tls_ca_cert_file": "/nonexistent/ca.crt",
            "redis_tls_cert_file": "/nonexistent/redis.crt",
            "redis_tls_key_file": "/nonexistent/redis.key",
        },
        [
            TLS_MISSING.format(
                "'/nonexistent/ca.crt', '/nonexistent/redis.crt', '/nonexistent/redis.key'"
            )
        ],
    ),
    ("TLS from the bundle needs no files", {"redis_tls": True}, []),
    ("TLS files unused without TLS", {"redis_tls_source": "files"}, []),
]


@pytest.mark.parametrize(
    ("changes", "expected"), [c[1:] for c in REDIS_CASES], ids=[c[0] for c in REDIS_CASES]
)
def test_redis_settings_errors(changes: dict[str, Any], expected: list[str]) -> None:
    assert bundle_redis_validate.bundle_redis_settings_errors(REDIS | changes, RAM) == expected


def test_tls_files_that_exist_on_the_controller_pass(tmp_path: Path) -> None:
    files = {}
    for name in ("ca_cert", "cert", "key"):
        path = tmp_path / f"{name}.pem"
        path.write_text("-----BEGIN-----\n")
        files[f"redis_tls_{name}_file"] = str(path)
    tls = REDIS | {"redis_tls": True, "redis_tls_source": "files"} | files
    assert bundle_redis_validate.settings_errors(tls, RAM) == []
    # A directory is not a file.
    as_dir = tls | {"redis_tls_key_file": str(tmp_path)}
    assert bundle_redis_validate.settings_errors(as_dir, RAM)[0].startswith("redis_tls is on")


def test_wrong_redis_types_are_refused_not_raised() -> None:
    odd = {name: ["x"] for name in REDIS} | {"redis_auth_mode": "acl", "redis_tls": True}
    errors = bundle_redis_validate.settings_errors(odd, RAM)
    assert len(errors) >= 10, errors


def short(name: str, rule: str, vault: str) -> str:
    return f"{name} must be at least 16 characters without control characters{rule}{vault}"


REDIS_PASSWORD = short(
    "redis_password",
    ".",
    " Generate one (openssl rand -base64 32) and store it in the inventory's vault file as"
    " vault_redis_password.",
)


def acl_password(user: str) -> str:
    return short(
        f"redis_acl_{user}_password",
        " when redis_auth_mode is acl.",
        " Generate one (openssl rand -base64 32), store it in the vault file as"
        f" vault_redis_{user}_password and reference it.",
    )


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({}, []),
        ({"redis_password": ""}, [REDIS_PASSWORD]),
        ({"redis_password": "short"}, [REDIS_PASSWORD]),
        ({"redis_password": None}, [REDIS_PASSWORD]),
        ({"redis_password": GOOD_PASSWORD + "\x7f"}, [REDIS_PASSWORD]),
        ({"redis_password": 12345678901234567}, []),
        (ACL, []),
        (ACL | {"redis_acl_celery_password": ""}, [acl_password("celery")]),
        (ACL | {"redis_acl_monitor_password": "short"}, [acl_password("monitor")]),
        (
            ACL | {"redis_acl_celery_password": "tab\there-0123456789", "redis_password": ""},
            [REDIS_PASSWORD, acl_password("celery")],
        ),
        # requirepass mode: the ACL users' passwords are not used.
        ({"redis_acl_celery_password": "", "redis_acl_monitor_password": "x"}, []),
    ],
)
def test_redis_password_errors(changes: dict[str, Any], expected: list[str]) -> None:
    variables = REDIS | changes
    errors = bundle_redis_validate.bundle_redis_password_errors(variables)
    assert errors == expected
    # No message shows a password.
    passwords = [str(v) for k, v in variables.items() if k.endswith("password") and v]
    assert not [p for p in passwords for e in errors if p in e]


@pytest.mark.parametrize(
    ("size", "percent", "ram", "expected"),
    [
        (None, 50, 2000, 1000),
        (None, 33, 1001, 330),
        (700, 50, 2000, 700),
        (0, 50, 2000, 0),  # refused by settings_errors, not derived
        (None, 50, None, None),
    ],
)
def test_maxmemory_mb(size: object, percent: object, ram: object, expected: object) -> None:
    assert bundle_redis_validate.bundle_redis_maxmemory_mb(size, percent, ram) == expected


# --- pki ------------------------------------------------------------------------------------

# The pki role's defaults.
PKI: dict[str, Any] = {
    "pki_ca_valid_days": 3650,
    "pki_certificate_valid_days": 825,
    "pki_renew_within_days": 30,
}
OUTLIVES_CA = (
    "pki_certificate_valid_days ({}) must be at least 1 and below pki_ca_valid_days ({}): a"
    " certificate cannot outlive the CA that signed it."
)
RENEWAL = (
    "pki_renew_within_days ({}) must be at least 1 and below pki_certificate_valid_days ({}): a"
    " host certificate is re-issued when it has fewer days left than that, so a new one must"
    " start with more, or every run would re-issue it. Leave it unset for 30."
)

# (case id, changes to PKI, messages)
PKI_CASES: list[tuple[str, dict[str, Any], list[str]]] = [
    ("the role's defaults", {}, []),
    ("renew a day before", {"pki_renew_within_days": 1}, []),
    ("renew the day before the end", {"pki_renew_within_days": 824}, []),
    (
        "short-lived certificates",
        {"pki_certificate_valid_days": 10, "pki_renew_within_days": 3},
        [],
    ),
    ("renew at 0 days", {"pki_renew_within_days": 0}, [RENEWAL.format(0, 825)]),
    ("renew at negative days", {"pki_renew_within_days": -5}, [RENEWAL.format(-5, 825)]),
    ("renew at the validity", {"pki_renew_within_days": 825}, [RENEWAL.format(825, 825)]),
    ("renew beyond the validity", {"pki_renew_within_days": 900}, [RENEWAL.format(900, 825)]),
    ("renew as a string", {"pki_renew_within_days": "30"}, [RENEWAL.format(30, 825)]),
    ("renew as a switch", {"pki_renew_within_days": True}, [RENEWAL.format(True, 825)]),
    ("renew as a fraction", {"pki_renew_within_days": 1.5}, [RENEWAL.format(1.5, 825)]),
    (
        "certificate outlives the CA",
        {"pki_certificate_valid_days": 4000},
        [OUTLIVES_CA.format(4000, 3650)],
    ),
    (
        "certificate of 0 days",
        {"pki_certificate_valid_days": 0},
        [OUTLIVES_CA.format(0, 3650), RENEWAL.format(30, 0)],
    ),
    (
        "renewal window longer than short-lived certificates",
        {"pki_certificate_valid_days": 30},
        [RENEWAL.format(30, 30)],
    ),
]


@pytest.mark.parametrize(
    ("changes", "expected"), [c[1:] for c in PKI_CASES], ids=[c[0] for c in PKI_CASES]
)
def test_pki_settings_errors(changes: dict[str, Any], expected: list[str]) -> None:
    assert bundle_pki_validate.bundle_pki_settings_errors(PKI | changes) == expected


def test_the_pki_cases_start_from_the_roles_defaults() -> None:
    defaults = yaml.safe_load((REPO / "roles/pki/defaults/main.yml").read_text())
    assert {name: defaults[name] for name in PKI} == PKI


def test_every_filter_carries_the_bundle_prefix() -> None:
    for module in (bundle_redis_validate, bundle_worker_validate, bundle_pki_validate):
        assert all(n.startswith("bundle_") for n in module.FilterModule().filters())


def _pem(body: str) -> str:
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    return "\n".join(["-----BEGIN CERTIFICATE-----", *lines, "-----END CERTIFICATE-----", ""])


def _slurp(text: str) -> dict[str, Any]:
    return {"content": base64.b64encode(text.encode()).decode(), "encoding": "base64"}


OLD_CA, NEW_CA = _pem("A" * 300), _pem("B" * 300)


@pytest.mark.parametrize(
    ("trusted", "installing", "expected"),
    [
        # A new host, or one without TLS yet: nothing to keep.
        ({"msg": "file not found: /etc/redis/tls/ca.crt", "failed": False}, NEW_CA, []),
        # The same CA, however its lines are wrapped or ended.
        (_slurp(OLD_CA), OLD_CA.replace("\n", "\r\n") + "\n\n", []),
        (
            _slurp(OLD_CA),
            NEW_CA,
            ["the earlier CA back (/pki/ca.crt and its key beside it, where the certificates"],
        ),
        # A bundle of two CAs is another CA file too.
        (_slurp(OLD_CA), OLD_CA + NEW_CA, ["is not the one the replicated group's servers"]),
    ],
)
def test_a_replicated_group_keeps_its_ca(
    trusted: dict[str, Any], installing: str, expected: list[str]
) -> None:
    errors = bundle_redis_validate.bundle_redis_ca_change_errors(
        trusted, installing, "/pki/ca.crt", "bundle", "redis2"
    )
    assert len(errors) == len(expected)
    for error, text in zip(errors, expected, strict=True):
        assert text in error
        assert error.startswith(
            "redis_tls_source (bundle): the CA this run would install on redis2"
        )


def test_a_changed_ca_file_names_the_variable_to_put_back() -> None:
    (error,) = bundle_redis_validate.bundle_redis_ca_change_errors(
        _slurp(OLD_CA), NEW_CA, "/etc/ca.pem", "files", "redis1"
    )
    assert "CA back (in /etc/ca.pem, the file redis_tls_ca_cert_file names)" in error
