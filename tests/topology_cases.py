"""Inputs for the celery_worker role's worker topology, and how their outputs were frozen.

roles/celery_worker/vars/main.yml defined the nodes (then ``__celery_worker_instances``,
now ``__celery_worker_nodes``) as a Jinja program until commit 705a43b; the filter plugin
roles/celery_worker/filter_plugins/celery_worker_topology.py replaced it, with the same
output for every input. tests/celery_worker_topology.json holds CASES with the output
the Jinja program gave each one, rendered by Ansible's Templar:

    python tests/topology_cases.py 705a43b

wrote it (the argument: a commit whose vars/main.yml still holds the Jinja program).
tests/test_celery_worker_topology.py checks the filter, and the current vars/main.yml
rendered the same way, against that file; it never needs the old program.

A case is host variables (over the role's defaults) and the host's vCPU fact (None: no
fact). Some are odd on purpose (nodes 0, a solo pool with concurrency 3, node names that
collide, nulls): tasks/validate.yml refuses those from the derived output, so the output
must stay the same for them too. A case whose rendering failed is frozen as its error.

A timeout_stop_sec of 0 meant "derive it" until null became the one spelling of unset;
the filter now passes 0 through for tasks/validate.yml to refuse. Its cases went: the two
instance cases were dropped, and the two host cases were set to null, keeping their frozen
rows, since the Jinja program renders null exactly as it rendered 0 there (checked by
re-rendering 705a43b's program: every column the same but the queues, which today's
defaults derive differently for every case). test_celery_worker_topology.py tests 0 itself.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
ROLE = REPO / "roles/celery_worker"
FROZEN = Path(__file__).with_name("celery_worker_topology.json")
# The order of a node's keys in the frozen rows.
NODE_KEYS = [
    "name",
    "instance",
    "node",
    "nodes",
    "kind",
    "queues",
    "pool",
    "concurrency",
    "autoscale",
    "prefetch_multiplier",
    "soft_time_limit",
    "time_limit",
    "min_stop_timeout",
    "timeout_stop_sec",
    "max_tasks_per_child",
    "max_memory_per_child_kb",
    "memory_max",
]

Case = tuple[str, dict[str, Any], int | None]

# Every instance key an inventory may set, with values to try (None: the key set to null).
INSTANCE_VALUES: dict[str, list[Any]] = {
    "kind": ["short", "long", None],
    "pool": ["prefork", "threads", "solo", None],
    "nodes": [3, 1, 0, -1, None],
    "concurrency": [2, 1, 0, None],
    "autoscale": [[8, 2], [], None],
    "queues": [["only"], [], None],
    "prefetch_multiplier": [4, None],
    "soft_time_limit": [50, None],
    "time_limit": [60, None],
    "timeout_stop_sec": [999, None],
    "max_tasks_per_child": [50, 0, None],
    "max_memory_per_child_kb": [200000, 0, None],
    "memory_max": ["2G", None],
}
# A host whose every default differs from the role's, so that an instance's override
# shows against it.
BUSY_HOST: dict[str, Any] = {
    "celery_worker_kind": "long",
    "celery_worker_pool": "threads",
    "celery_worker_nodes": 2,
    "celery_worker_concurrency": 5,
    "celery_worker_io_concurrency_multiplier": 3,
    "celery_worker_queues": ["busy"],
    "celery_worker_prefetch_multiplier": 2,
    "celery_worker_soft_time_limit": 100,
    "celery_worker_time_limit": 120,
    "celery_worker_timeout_stop_sec": 400,
    "celery_worker_max_tasks_per_child": 10,
    "celery_worker_max_memory_per_child_kb": 3000,
    "celery_worker_memory_max": "1G",
    "celery_worker_soft_shutdown_timeout": 7,
    "celery_worker_stop_margin": 11,
}


def _id(prefix: str, values: dict[str, Any]) -> str:
    return prefix + " " + " ".join(f"{k}={json.dumps(v)}" for k, v in values.items())


def _cases() -> list[Case]:
    cases: list[Case] = []
    # The host-wide sizes, on the role's one default instance.
    for kind, pool, concurrency, nodes, vcpus in itertools.product(
        ["short", "long"], [None, "prefork", "threads", "solo"], [None, 3], [None, 0, 2], [1, 2, 4]
    ):
        host: dict[str, Any] = {
            "celery_worker_kind": kind,
            "celery_worker_pool": pool,
            "celery_worker_concurrency": concurrency,
            "celery_worker_nodes": nodes,
        }
        cases.append((_id(f"host vcpus={vcpus}", host), host, vcpus))
    # The other host-wide settings, one or two at a time.
    settings: list[dict[str, Any]] = [
        {"celery_worker_max_tasks_per_child": 100},
        {"celery_worker_max_memory_per_child_kb": 200000},
        {"celery_worker_max_tasks_per_child": 100, "celery_worker_pool": "solo"},
        {"celery_worker_pool": "threads", "celery_worker_io_concurrency_multiplier": 8},
        {"celery_worker_timeout_stop_sec": 500},
        {"celery_worker_timeout_stop_sec": None, "celery_worker_time_limit": 600},
        {"celery_worker_soft_shutdown_timeout": 0, "celery_worker_stop_margin": 0},
        {"celery_worker_queues": ["a", "b"], "celery_worker_prefetch_multiplier": 3},
        {"celery_worker_memory_max": "2G", "celery_worker_soft_time_limit": 20},
    ]
    for kind, setting in itertools.product(["short", "long"], settings):
        host = {"celery_worker_kind": kind} | setting
        cases.append((_id("host vcpus=4", host), host, 4))
    for no_fact_or_odd in [None, 3]:
        cases.append((f"host vcpus={no_fact_or_odd}", {}, no_fact_or_odd))
    # Each instance key and value, over the role's defaults and over a busy host's.
    for (key, values), (background, host) in itertools.product(
        INSTANCE_VALUES.items(), [("role defaults", {}), ("busy host", BUSY_HOST)]
    ):
        for value in values:
            instance = {"name": "w", key: value}
            case_vars = host | {"celery_worker_instances": [instance]}
            cases.append((_id(f"instance over {background}", instance), case_vars, 4))
    # The sizes of one instance together.
    for kind, pool, concurrency, nodes, autoscale in itertools.product(
        ["short", "long"],
        ["", "prefork", "threads", "solo"],
        [None, 2],
        [None, 0, 3],
        [None, [4, 1]],
    ):
        instance = {"name": "w", "kind": kind}
        for name, value in [
            ("pool", pool or None),
            ("concurrency", concurrency),
            ("nodes", nodes),
            ("autoscale", autoscale),
        ]:
            if value is not None:
                instance[name] = value
        cases.append(
            (_id("instance vcpus=2", instance), {"celery_worker_instances": [instance]}, 2)
        )
    # Several instances, the inventories' own among them, and odd ones.
    for name, instances, vcpus in [
        (
            "production group_vars",
            [
                {
                    "name": "cpu",
                    "queues": ["celery", "cpu"],
                    "pool": "prefork",
                    "kind": "short",
                    "max_tasks_per_child": 1000,
                },
                {"name": "io", "queues": ["io"], "pool": "threads"},
            ],
            4,
        ),
        (
            "production worker2",
            [
                {"name": "cpu", "queues": ["celery", "cpu"], "pool": "prefork", "concurrency": 2},
                {"name": "io", "queues": ["io"], "pool": "threads", "concurrency": 8},
            ],
            2,
        ),
        ("short prefork nodes", [{"name": "cpu", "pool": "prefork"}], 4),
        ("names collide", [{"name": "a", "nodes": 2}, {"name": "a-2"}], 1),
        ("solo with concurrency 3", [{"name": "one", "pool": "solo", "concurrency": 3}], 2),
        ("solo with a child limit", [{"name": "one", "pool": "solo", "max_tasks_per_child": 5}], 2),
        ("threads with autoscale", [{"name": "io", "pool": "threads", "autoscale": [8, 2]}], 2),
        ("bad name", [{"name": "a b", "nodes": 2}], 1),
        ("no instances", [], 4),
        (
            "null autoscale with concurrency",
            [{"name": "w", "autoscale": None, "concurrency": 2, "nodes": 2}],
            2,
        ),
        ("tight stop timeout", [{"name": "w", "time_limit": 600, "timeout_stop_sec": 605}], 1),
    ]:
        cases.append((f"instances: {name}", {"celery_worker_instances": instances}, vcpus))
    extras: list[dict[str, Any]] = [
        {"celery_worker_concurrency": 4, "celery_worker_nodes": None},
        {"celery_worker_nodes": 3},
        {"celery_worker_pool": "solo"},
    ]
    for extra in extras:
        # Host-wide sizes under an instance that sets none, and one that sets concurrency
        # null (null means unset for concurrency and nodes).
        instances = [{"name": "a"}, {"name": "b", "concurrency": None, "nodes": None}]
        case_vars = extra | {"celery_worker_instances": instances}
        cases.append((_id("null sizes under host", extra), case_vars, 2))
    return cases


CASES: list[Case] = _cases()

# app/pyproject.toml's [tool.rcbundle.task_routes]: with the default queue, celery, cpu and io.
BUNDLED_APP_ROUTES = {"taskapp.process_data": "cpu", "taskapp.fetch_url": "io"}
BUNDLED_APP_QUEUES = ["celery", "cpu", "io"]


def role_variables(vars_text: str, case_vars: dict[str, Any], vcpus: int | None) -> dict[str, Any]:
    """The variables a host of the case sees: the role's defaults and vars, its host vars."""
    from ansible.parsing.dataloader import DataLoader
    from ansible.template import trust_as_template

    loader = DataLoader()
    defaults = loader.load(trust_as_template((ROLE / "defaults/main.yml").read_text()))
    role_vars = loader.load(trust_as_template(vars_text))
    facts = {} if vcpus is None else {"processor_vcpus": vcpus}
    # The table was frozen when the role's queues defaulted to [celery, cpu, io]; today they
    # derive from the release's routes, so the bundled app's routes give that list again.
    release = {"celery_worker_release": {"task_routes": BUNDLED_APP_ROUTES}}
    return {**defaults, **release, **case_vars, **role_vars, "ansible_facts": facts}


def render(
    vars_text: str,
    case_vars: dict[str, Any],
    vcpus: int | None,
    variable: str = "__celery_worker_nodes",
) -> Any:  # noqa: ANN401
    """The nodes (variable) as Ansible templates them from vars_text (a vars/main.yml)."""
    from ansible.parsing.dataloader import DataLoader
    from ansible.plugins.loader import add_all_plugin_dirs
    from ansible.template import Templar, trust_as_template

    add_all_plugin_dirs(str(ROLE))  # what loading the role does: its filter_plugins
    templar = Templar(loader=DataLoader(), variables=role_variables(vars_text, case_vars, vcpus))
    return templar.template(trust_as_template("{{ " + variable + " }}"))


def as_rows(nodes: list[dict[str, Any]]) -> list[list[Any]]:
    """Nodes as rows of NODE_KEYS, keys checked."""
    for node in nodes:
        assert sorted(node) == sorted(NODE_KEYS), node
    return [[node[key] for key in NODE_KEYS] for node in nodes]


def freeze(revision: str) -> None:
    old = subprocess.run(
        ["git", "show", f"{revision}:roles/celery_worker/vars/main.yml"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "{%- for i in celery_worker_instances -%}" in old, "not the Jinja program"
    frozen = []
    for case_id, case_vars, vcpus in CASES:
        entry: dict[str, Any] = {"id": case_id, "vars": case_vars, "vcpus": vcpus}
        try:
            # The old program's name for the nodes.
            nodes = render(old, case_vars, vcpus, "__celery_worker_instances")
            entry["nodes"] = as_rows(json.loads(json.dumps(nodes)))
        except Exception as exc:  # frozen as the case's outcome
            entry["error"] = str(exc).splitlines()[0]
        frozen.append(entry)
    ids = [entry["id"] for entry in frozen]
    assert len(set(ids)) == len(ids), "case ids collide"
    lines = [json.dumps(entry, separators=(",", ":")) for entry in frozen]
    header = {"rendered_from": revision, "node_keys": NODE_KEYS}
    FROZEN.write_text(
        '{"about":' + json.dumps(header) + ',\n"cases":[\n' + ",\n".join(lines) + "\n]}\n"
    )
    print(f"{len(frozen)} cases, {sum('error' in e for e in frozen)} errors -> {FROZEN}")


if __name__ == "__main__":
    freeze(sys.argv[1])
