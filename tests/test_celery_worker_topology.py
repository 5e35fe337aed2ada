"""The celery_worker role's worker topology (filter_plugins/celery_worker_topology.py).

The filter replaced a Jinja program in vars/main.yml and must give the same output for
every input: tests/celery_worker_topology.json holds that program's output for each of
tests/topology_cases.py's cases, frozen once with Ansible's Templar. The filter is
checked against it called from Python, and through the role's vars/main.yml as Ansible
templates it. No lab, no ansible-playbook run.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import pytest
import yaml
from topology_cases import BUNDLED_APP_QUEUES, CASES, FROZEN, NODE_KEYS, ROLE, as_rows, render

sys.path.insert(0, str(ROLE / "filter_plugins"))
import celery_worker_topology  # the role's plugin, not an installed module
from celery_worker_topology import DEFAULT_KEYS

TABLE: dict[str, Any] = json.loads(FROZEN.read_text())
FROZEN_CASES: list[dict[str, Any]] = TABLE["cases"]
ROLE_DEFAULTS: dict[str, Any] = yaml.safe_load((ROLE / "defaults/main.yml").read_text())
VARS_MAIN = (ROLE / "vars/main.yml").read_text()


def strict(value: object) -> str:
    """value as JSON: equal only when the types are too (1 is not true, 1 is not 1.0)."""
    return json.dumps(value, sort_keys=True)


def topology(case_vars: dict[str, Any], vcpus: int | None) -> list[list[Any]]:
    """The filter's output for the case, called as vars/main.yml calls it, as rows."""
    # vars/main.yml derives unset queues from the app's routes (render() gives it those).
    host = ROLE_DEFAULTS | {"celery_worker_queues": BUNDLED_APP_QUEUES} | case_vars
    defaults = {key: host[f"celery_worker_{key}"] for key in DEFAULT_KEYS}
    nodes = celery_worker_topology.celery_worker_topology(
        host["celery_worker_instances"], defaults, 1 if vcpus is None else vcpus
    )
    return as_rows(json.loads(json.dumps(nodes)))


def test_the_frozen_table_is_of_the_current_cases() -> None:
    assert TABLE["about"]["node_keys"] == NODE_KEYS
    assert [c["id"] for c in FROZEN_CASES] == [c[0] for c in CASES], (
        "tests/topology_cases.py changed: re-run it (see its docstring)"
    )
    for frozen, (_, case_vars, vcpus) in zip(FROZEN_CASES, CASES, strict=True):
        assert strict([frozen["vars"], frozen["vcpus"]]) == strict([case_vars, vcpus])


@pytest.mark.parametrize("case", FROZEN_CASES, ids=[c["id"] for c in FROZEN_CASES])
def test_the_filter_gives_what_the_jinja_program_gave(case: dict[str, Any]) -> None:
    if "error" in case:
        with pytest.raises(TypeError):
            topology(case["vars"], case["vcpus"])
    else:
        assert strict(topology(case["vars"], case["vcpus"])) == strict(case["nodes"])


@pytest.mark.parametrize("case", FROZEN_CASES, ids=[c["id"] for c in FROZEN_CASES])
def test_vars_main_gives_what_the_jinja_program_gave(case: dict[str, Any]) -> None:
    """The same through Ansible: the defaults mapping in vars/main.yml, the vCPU fact."""
    if "error" in case:
        with pytest.raises(Exception, match="NoneType"):
            render(VARS_MAIN, case["vars"], case["vcpus"])
    else:
        nodes = json.loads(json.dumps(render(VARS_MAIN, case["vars"], case["vcpus"])))
        assert strict(as_rows(nodes)) == strict(case["nodes"])


def test_the_table_covers_what_it_must() -> None:
    cases = {c["id"]: c for c in FROZEN_CASES}
    assert {c["vcpus"] for c in FROZEN_CASES} >= {1, 2, 4, None}
    rows = [
        dict(zip(NODE_KEYS, row, strict=True)) for c in FROZEN_CASES for row in c.get("nodes", [])
    ]
    assert {r["pool"] for r in rows} == {"solo", "prefork", "threads"}
    assert {r["kind"] for r in rows} == {"short", "long", None}
    assert {r["nodes"] for r in rows} >= {0, 1, 2, 3, 4, -1}
    assert len(cases) == len(FROZEN_CASES), "case ids collide"


def node(nodes: list[celery_worker_topology.WorkerNode], name: str) -> dict[str, Any]:
    return dict(next(n for n in nodes if n["name"] == name))


# A few cases spelled out, for a reader: what the derivation is for.
DEFAULTS = {key: ROLE_DEFAULTS[f"celery_worker_{key}"] for key in DEFAULT_KEYS}


def test_a_short_instance_runs_one_solo_node_per_vcpu() -> None:
    nodes = celery_worker_topology.celery_worker_topology([{"name": "default"}], DEFAULTS, 4)
    assert [(n["name"], n["node"], n["pool"], n["concurrency"]) for n in nodes] == [
        ("default", 1, "solo", 1),
        ("default-2", 2, "solo", 1),
        ("default-3", 3, "solo", 1),
        ("default-4", 4, "solo", 1),
    ]
    assert {n["instance"] for n in nodes} == {"default"}
    # TimeoutStopSec: hard time limit 330 + soft shutdown 10 + margin 30.
    assert {(n["min_stop_timeout"], n["timeout_stop_sec"]) for n in nodes} == {(340, 370)}


def test_a_long_instance_runs_one_prefork_node_of_one_process_per_vcpu() -> None:
    nodes = celery_worker_topology.celery_worker_topology(
        [{"name": "slow", "kind": "long", "time_limit": 900, "timeout_stop_sec": 1000}], DEFAULTS, 4
    )
    slow = node(nodes, "slow")
    assert len(nodes) == 1
    assert (slow["pool"], slow["concurrency"], slow["nodes"]) == ("prefork", 4, 1)
    assert (slow["min_stop_timeout"], slow["timeout_stop_sec"]) == (910, 1000)


def test_a_set_size_keeps_one_node_and_threads_multiply_the_vcpus() -> None:
    nodes = celery_worker_topology.celery_worker_topology(
        [{"name": "cpu", "concurrency": 2}, {"name": "io", "pool": "threads"}], DEFAULTS, 2
    )
    assert [(n["name"], n["pool"], n["concurrency"]) for n in nodes] == [
        ("cpu", "prefork", 2),
        ("io", "threads", 8),
    ]


def test_odd_input_passes_through_for_validation_to_refuse() -> None:
    nodes = celery_worker_topology.celery_worker_topology(
        [{"name": "a", "nodes": 2}, {"name": "a-2", "nodes": 0, "pool": "solo", "concurrency": 3}],
        DEFAULTS,
        1,
    )
    assert [(n["name"], n["nodes"], n["concurrency"]) for n in nodes] == [
        ("a", 2, 1),
        ("a-2", 2, 1),
        ("a-2", 0, 3),
    ]


def test_only_null_derives_the_stop_timeout() -> None:
    instances: list[dict[str, Any]] = [
        {"name": "derived", "timeout_stop_sec": None},
        {"name": "zero", "timeout_stop_sec": 0},
    ]
    nodes = celery_worker_topology.celery_worker_topology(
        instances, DEFAULTS | {"timeout_stop_sec": None, "time_limit": 600}, 1
    )
    # Null: hard time limit 600 + soft shutdown 10 + margin 30. 0 stays 0, for validation
    # to refuse (it is not another spelling of unset).
    assert [(n["name"], n["timeout_stop_sec"]) for n in nodes] == [("derived", 640), ("zero", 0)]
    host_zero = DEFAULTS | {"timeout_stop_sec": 0}
    (only,) = celery_worker_topology.celery_worker_topology([{"name": "a"}], host_zero, 1)
    assert only["timeout_stop_sec"] == 0


def test_missing_defaults_are_named() -> None:
    with pytest.raises(KeyError, match="stop_margin"):
        celery_worker_topology.celery_worker_topology(
            [{"name": "a"}], {k: v for k, v in DEFAULTS.items() if k != "stop_margin"}, 1
        )


def test_vars_main_passes_every_default() -> None:
    role_vars = yaml.safe_load(VARS_MAIN)
    mapping = role_vars["__celery_worker_entry_defaults"]
    assert list(mapping) == list(DEFAULT_KEYS)
    # Each key from its variable, except queues: unset, they derive from the routes.
    expected = {key: f"{{{{ celery_worker_{key} }}}}" for key in DEFAULT_KEYS}
    assert mapping == expected | {"queues": "{{ __celery_worker_queues }}"}
