"""Runs the validation plays against a throwaway inventory whose hosts are this machine.

Only `--tags validate` is selected (the build and validation plays), so even a
check that wrongly passed could not change anything here.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import yaml

from testkit import playbook

GOOD_GROUP_VARS: dict[str, Any] = {
    "vault_redis_password": "test-only-throwaway-0123456789",
    "redis_password": "{{ vault_redis_password }}",
}


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


def run_validation(inventory: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return playbook("deploy.yml", inventory, "--tags", "validate", *extra, timeout=300)


def assert_refused(proc: subprocess.CompletedProcess[str], expected: list[str]) -> None:
    """The run failed, and its output names the variable and the fix."""
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, output[-3000:]
    for text in expected:
        assert text in output, f"{text!r} missing from:\n{output[-3000:]}"
