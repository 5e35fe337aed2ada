"""A wrong inventory value stops the run before any host changes, naming the variable and the fix.

Cases for the foundation's variables; tests/badinput.py has the harness.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from badinput import assert_refused, run_validation, write_inventory
from conftest import REPO

# (case id, host_vars for the redis host, host_vars for the worker host,
#  extra hosts in the redis group, text the failure must contain)
CASES: list[tuple[str, dict[str, Any], dict[str, Any], int, list[str]]] = [
    ("empty password", {"redis_password": ""}, {}, 0, ["redis_password", "vault_redis_password"]),
    ("short password", {"redis_password": "short"}, {}, 0, ["redis_password", "16 characters"]),
    (
        "unknown policy",
        {"redis_maxmemory_policy": "lru"},
        {},
        0,
        ["redis_maxmemory_policy", "noeviction"],
    ),
    (
        "evicting policy on the broker",
        {"redis_maxmemory_policy": "allkeys-lru"},
        {},
        0,
        ["redis_maxmemory_policy", "redis_holds_broker", "noeviction"],
    ),
    (
        "port is not a number",
        {"redis_port": "six-three-seven-nine"},
        {},
        0,
        ["redis_port must be a whole number", "Set it in the inventory"],
    ),
    ("port out of range", {"redis_port": 70000}, {}, 0, ["redis_port", "between 1 and 65535"]),
    ("wildcard bind", {"redis_bind": ["0.0.0.0"]}, {}, 0, ["redis_bind", "wildcard"]),
    (
        "maxmemory above RAM",
        {"redis_maxmemory_mb": 10**9},
        {},
        0,
        ["redis_maxmemory_mb", "RAM", "leave it unset"],
    ),
    (
        "unknown persistence",
        {"redis_persistence": "sometimes"},
        {},
        0,
        ["redis_persistence", "aof"],
    ),
    (
        "negative concurrency",
        {},
        {"celery_worker_concurrency": -1},
        0,
        ["celery_worker_concurrency", "at least 1"],
    ),
    (
        "instance concurrency below 1",
        {},
        {"celery_worker_instances": [{"name": "io", "concurrency": -3}]},
        0,
        ["celery_worker_instances", "io", "concurrency must be at least 1"],
    ),
    ("unknown pool", {}, {"celery_worker_pool": "gevent"}, 0, ["celery_worker_pool", "prefork"]),
    (
        "hard limit above visibility timeout",
        {},
        {"celery_worker_time_limit": 4000},
        0,
        ["celery_worker_time_limit", "celery_worker_visibility_timeout", "runs twice"],
    ),
    (
        "soft limit above hard limit",
        {},
        {"celery_worker_soft_time_limit": 400},
        0,
        ["celery_worker_soft_time_limit", "celery_worker_time_limit"],
    ),
    (
        "bad instance name",
        {},
        {"celery_worker_instances": [{"name": "a b"}]},
        0,
        ["celery_worker_instances", "letters"],
    ),
    ("two redis hosts", {}, {}, 1, ["group 'redis' has 2 hosts", "an odd number of hosts"]),
    (
        "three redis hosts without ACL users",
        {},
        {},
        2,
        ["redis_auth_mode: acl", "redis_acl_replication_password must be at least 16"],
    ),
    (
        "three redis hosts on different ports",
        {"redis_port": 6390},
        {},
        2,
        ["redis_port is 6390 on bad-redis but bad-redis2: 6379, bad-redis3: 6379", "group_vars"],
    ),
    (
        "number as a string",
        {"redis_maxmemory_mb": "200"},
        {},
        0,
        ['redis_maxmemory_mb must be a whole number, got the string "200"', "pass it as JSON"],
    ),
    (
        "switch as a string",
        {},
        {"celery_worker_redis_tls": "yes"},
        0,
        ["celery_worker_redis_tls must be true or false", "Set it in the inventory"],
    ),
    (
        "renewal window as long as the certificates live",
        {},
        {"pki_renew_within_days": 825},
        0,
        ["pki_renew_within_days (825) must be at least 1 and below pki_certificate_valid_days"],
    ),
]


def test_good_inventory_passes(tmp_path: Path) -> None:
    proc = run_validation(write_inventory(tmp_path, {}, {}, 0))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


@pytest.mark.parametrize(
    ("redis_vars", "worker_vars", "extra_redis", "expected"),
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
def test_bad_input_is_refused_with_a_useful_message(
    tmp_path: Path,
    redis_vars: dict[str, Any],
    worker_vars: dict[str, Any],
    extra_redis: int,
    expected: list[str],
) -> None:
    proc = run_validation(write_inventory(tmp_path, redis_vars, worker_vars, extra_redis))
    assert_refused(proc, expected)


def test_validation_runs_before_any_host_play() -> None:
    plays = yaml.safe_load((REPO / "playbooks/deploy.yml").read_text())
    order = [p["ansible.builtin.import_playbook"] for p in plays]
    assert order.index("validate.yml") < order.index("certificates.yml") < order.index("redis.yml")
    assert order.index("redis.yml") < order.index("workers.yml")
    validate = yaml.safe_load((REPO / "playbooks/validate.yml").read_text())[0]
    assert validate["any_errors_fatal"] is True
    assert "always" in validate["tags"]


def test_a_number_given_with_dash_e_is_refused_with_a_useful_message(tmp_path: Path) -> None:
    # -e name=value always gives a string; without the type check this was a template error.
    inventory = write_inventory(tmp_path, {}, {}, 0)
    proc = run_validation(inventory, "-e", "celery_worker_concurrency=2")
    assert_refused(
        proc,
        ['celery_worker_concurrency must be a whole number, got the string "2"', "-e '{\""],
    )
    assert "Traceback" not in proc.stdout + proc.stderr
