"""A misspelt role variable, or one of another role's with a wrong type, stops the run.

Through deploy.yml --tags validate, as a user meets it (tests/badinput.py has the harness).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from badinput import assert_refused, run_validation, write_inventory
from conftest import REPO

# (case id, host_vars for the redis host, host_vars for the worker host, extra -e arguments,
#  text the failure must contain)
CASES: list[tuple[str, dict[str, Any], dict[str, Any], list[str], list[str]]] = [
    (
        "misspelt in host_vars",
        {"redis_maxmemroy_policy": "noeviction"},
        {},
        [],
        [
            "redis_maxmemroy_policy is not a variable of any role (did you mean"
            " redis_maxmemory_policy?). Fix its name in the inventory, or remove it."
        ],
    ),
    (
        "misspelt with -e",
        {},
        {},
        ["-e", "celery_worker_concurency=2"],
        ["celery_worker_concurency is not a variable", "did you mean celery_worker_concurrency?"],
    ),
    (
        "misspelt with nothing close",
        {},
        {"celery_worker_frobnicate": True},
        [],
        [
            "celery_worker_frobnicate is not a variable of any role; the celery_worker role's"
            " variables are in roles/celery_worker/meta/argument_specs.yml"
        ],
    ),
    (
        "the beat switch as a string",
        {},
        {},
        ["-e", "celery_worker_beat=yes"],
        ['celery_worker_beat must be true or false, got the string "yes"', "pass it as JSON"],
    ),
    (
        "a variable of the retired celery_beat role",
        {},
        {"celery_beat_loglevel": "DEBUG"},
        [],
        [
            "celery_beat_loglevel is no longer a variable (the celery_beat role became part of"
            " celery_worker, which runs beat on its host; use celery_worker_beat_loglevel)."
        ],
    ),
    (
        "the renamed results switch",
        {"redis_results_instance": True},
        {},
        [],
        [
            "redis_results_instance is no longer a variable (it was renamed: use"
            " redis_results_server)."
        ],
    ),
    (
        "a redis variable of the wrong type on a worker host",
        {},
        {"redis_port": "6379"},
        [],
        ['redis_port must be a whole number, got the string "6379"', "Set it in the inventory"],
    ),
    (
        "a misspelt instance key",
        {},
        {"celery_worker_instances": [{"name": "io", "concurency": 2}]},
        [],
        ["celery_worker_instances entry io: concurency is not a key", "did you mean concurrency?"],
    ),
    (
        "an instance key as a string",
        {},
        {"celery_worker_instances": [{"name": "io", "concurrency": "3"}]},
        [],
        [
            "celery_worker_instances entry io: concurrency must be a whole number, got the"
            ' string "3". Set it in the inventory as a whole number.'
        ],
    ),
]


@pytest.mark.parametrize(
    ("redis_vars", "worker_vars", "extra", "expected"),
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
def test_bad_name_or_type_is_refused(
    tmp_path: Path,
    redis_vars: dict[str, Any],
    worker_vars: dict[str, Any],
    extra: list[str],
    expected: list[str],
) -> None:
    proc = run_validation(write_inventory(tmp_path, redis_vars, worker_vars, 0), *extra)
    assert_refused(proc, expected)
    assert "Traceback" not in proc.stdout + proc.stderr


def test_declared_play_settings_pass(tmp_path: Path) -> None:
    # celery_worker_serial is read by playbooks/workers.yml and declared by the role.
    extra = json.dumps({"celery_worker_serial": "25%"})
    proc = run_validation(write_inventory(tmp_path, {}, {}, 0), "-e", extra)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def run_as_molecule(inventory: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """converge.yml under a configuration naming no plugin directory, as Molecule's own does.

    The filters load from playbooks/filter_plugins (beside the imported playbooks) and
    roles/celery_worker/filter_plugins (with the role), whatever the configuration.
    """
    config = tmp_path / "molecule-like.cfg"
    config.write_text("[defaults]\ninterpreter_python = /usr/bin/python3\n")
    env = {
        **os.environ,
        "ANSIBLE_CONFIG": str(config),
        "ANSIBLE_ROLES_PATH": str(REPO / "roles"),
        "ANSIBLE_NOCOLOR": "1",
    }
    for name in ("ANSIBLE_FILTER_PLUGINS", "ANSIBLE_STRATEGY", "ANSIBLE_STRATEGY_PLUGINS"):
        env.pop(name, None)
    return subprocess.run(
        [
            *("ansible-playbook", "molecule/default/converge.yml"),
            *("-i", str(inventory), "--tags", "validate"),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_filters_load_without_a_plugin_setting(tmp_path: Path) -> None:
    good = run_as_molecule(write_inventory(tmp_path / "good", {}, {}, 0), tmp_path)
    assert good.returncode == 0, good.stdout[-3000:] + good.stderr[-3000:]
    for task in ("types of the roles' variables", "role-named variable", "each worker instance"):
        assert task in good.stdout
    worker = {"celery_worker_instances": [{"name": "cpu", "concurrency": 0}]}
    bad = run_as_molecule(write_inventory(tmp_path / "bad", {}, worker, 0), tmp_path)
    assert_refused(bad, ["celery_worker_instances entry cpu: concurrency must be at least 1"])
