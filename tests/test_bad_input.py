"""A wrong inventory value stops the run before any host changes, naming the variable and the fix.

Each case writes a small inventory whose two hosts are this machine (connection
local) and runs `ansible-playbook deploy.yml --tags validate`: only the build
and validation plays are selected, so even a check that wrongly passed could
not change anything here.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import REPO

GOOD_GROUP_VARS: dict[str, Any] = {
    "vault_redis_password": "test-only-throwaway-0123456789",
    "redis_password": "{{ vault_redis_password }}",
    "celery_worker_redis_host": "{{ groups['redis'] | first }}",
    "celery_worker_redis_password": "{{ vault_redis_password }}",
}

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
    ("port is not a number", {"redis_port": "six-three-seven-nine"}, {}, 0, ["redis_port", "int"]),
    ("port out of range", {"redis_port": 70000}, {}, 0, ["redis_port", "between 1 and 65535"]),
    ("wildcard bind", {"redis_bind": ["0.0.0.0"]}, {}, 0, ["redis_bind", "wildcard"]),
    (
        "maxmemory above RAM",
        {"redis_maxmemory_mb": 10**9},
        {},
        0,
        ["redis_maxmemory_mb", "RAM", "set 0"],
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
    ("two redis hosts", {}, {}, 1, ["exactly one host in group 'redis'", "got 2"]),
]


def write_inventory(
    root: Path, redis_vars: dict[str, Any], worker_vars: dict[str, Any], extra_redis: int
) -> Path:
    local = {"ansible_connection": "local"}
    redis_hosts = {"bad-redis": local} | {f"bad-redis{i}": local for i in range(2, extra_redis + 2)}
    hosts = {
        "all": {
            "children": {
                "redis": {"hosts": redis_hosts},
                "celery_workers": {"hosts": {"bad-worker": local}},
            }
        }
    }
    (root / "group_vars").mkdir(parents=True)
    (root / "host_vars").mkdir()
    (root / "hosts.yml").write_text(yaml.safe_dump(hosts))
    (root / "group_vars/all.yml").write_text(yaml.safe_dump(GOOD_GROUP_VARS))
    (root / "host_vars/bad-redis.yml").write_text(yaml.safe_dump(redis_vars))
    (root / "host_vars/bad-worker.yml").write_text(yaml.safe_dump(worker_vars))
    return root / "hosts.yml"


def run_validation(inventory: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1"}
    return subprocess.run(
        ["ansible-playbook", "deploy.yml", "-i", str(inventory), "--tags", "validate"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


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
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, output[-3000:]
    for text in expected:
        assert text in output, f"{text!r} missing from:\n{output[-3000:]}"
    # any_errors_fatal: one bad host stops every host.
    assert "PLAY RECAP" in output


def test_validation_runs_before_any_host_play() -> None:
    plays = yaml.safe_load((REPO / "playbooks/deploy.yml").read_text())
    order = [p["ansible.builtin.import_playbook"] for p in plays]
    assert order.index("validate.yml") < order.index("redis.yml") < order.index("workers.yml")
    validate = yaml.safe_load((REPO / "playbooks/validate.yml").read_text())[0]
    assert validate["any_errors_fatal"] is True
    assert "always" in validate["tags"]
