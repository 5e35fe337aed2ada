"""The validation filters (playbooks/filter_plugins, roles/celery_worker/filter_plugins), no lab.

Each rule with a good and a bad input and the exact message a user sees.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
from conftest import REPO
from jinja2.exceptions import UndefinedError

sys.path.insert(0, str(REPO / "playbooks/filter_plugins"))
sys.path.insert(0, str(REPO / "roles/celery_worker/filter_plugins"))
sys.path.insert(0, str(REPO / "roles/redis/filter_plugins"))
# Filter plugin files, not installed modules.
import bundle_redis_validate
import bundle_validate
import bundle_worker_validate

ROLES = bundle_validate.role_options()


def dash_e(name: str) -> str:
    return (
        f"a value given as -e {name}=... is always a string, so pass it as JSON instead:"
        f" -e '{{\"{name}\": ...}}'."
    )


# (case id, variables, messages)
TYPE_CASES: list[tuple[str, dict[str, Any], list[str]]] = [
    ("good values", {"redis_port": 6379, "redis_tls": False, "redis_bind": ["10.0.0.1"]}, []),
    ("null means unset", {"celery_worker_concurrency": None, "celery_worker_pool": None}, []),
    (
        "strings take anything",
        {"redis_password": 12345678901234567, "celery_worker_memory_max": 2},
        [],
    ),
    (
        "number as a string",
        {"redis_port": "6379"},
        [
            'redis_port must be a whole number, got the string "6379". Set it in the inventory as'
            f" a whole number; {dash_e('redis_port')}"
        ],
    ),
    (
        "fraction for a whole number",
        {"celery_worker_concurrency": 2.5},
        [
            "celery_worker_concurrency must be a whole number, got 2.5. Set it in the inventory"
            f" as a whole number; {dash_e('celery_worker_concurrency')}"
        ],
    ),
    (
        "switch for a whole number",
        {"redis_databases": True},
        [
            "redis_databases must be a whole number, got true. Set it in the inventory as a whole"
            f" number; {dash_e('redis_databases')}"
        ],
    ),
    (
        "switch as a string",
        {"celery_worker_redis_tls": "yes"},
        [
            'celery_worker_redis_tls must be true or false, got the string "yes". Set it in the'
            f" inventory as true or false; {dash_e('celery_worker_redis_tls')}"
        ],
    ),
    (
        "the beat switch as a string",
        {"celery_worker_beat": "true"},
        [
            'celery_worker_beat must be true or false, got the string "true". Set it in the'
            f" inventory as true or false; {dash_e('celery_worker_beat')}"
        ],
    ),
    (
        "string for a list",
        {"redis_bind": "10.0.0.1"},
        [
            'redis_bind must be a list, got the string "10.0.0.1". Set it in the inventory as a'
            f" list; {dash_e('redis_bind')}"
        ],
    ),
    (
        "list for a mapping",
        {"celery_worker_task_routes": ["cpu"]},
        [
            'celery_worker_task_routes must be a mapping, got ["cpu"]. Set it in the inventory as'
            f" a mapping; {dash_e('celery_worker_task_routes')}"
        ],
    ),
    (
        "entries that are not mappings",
        {"celery_worker_instances": ["cpu"]},
        [
            'celery_worker_instances must be a list of mappings, got ["cpu"]. Set it in the'
            f" inventory as a list of mappings; {dash_e('celery_worker_instances')}"
        ],
    ),
    (
        "a key of an entry as a string",
        {"celery_worker_instances": [{"name": "io", "concurrency": "3"}, {"name": "cpu"}]},
        [
            "celery_worker_instances entry io: concurrency must be a whole number, got the string"
            ' "3". Set it in the inventory as a whole number.'
        ],
    ),
    (
        "elements of an entry's list",
        {"celery_worker_instances": [{"name": "cpu", "autoscale": ["4", 2]}]},
        [
            "celery_worker_instances entry cpu: autoscale must be a list of whole numbers,"
            ' got ["4", 2]. Set it in the inventory as a list of whole numbers.'
        ],
    ),
    (
        "an entry without a name",
        {"celery_worker_instances": [{"name": "a"}, {"queues": "io"}]},
        [
            'celery_worker_instances entry 2: queues must be a list, got the string "io". Set it'
            " in the inventory as a list."
        ],
    ),
    (
        "a misspelt key of an entry",
        {"celery_worker_instances": [{"name": "io", "concurency": 2, "colour": "red"}]},
        [
            "celery_worker_instances entry io: concurency is not a key of celery_worker_instances"
            " (did you mean concurrency?). Fix its name in the inventory, or remove it.",
            "celery_worker_instances entry io: colour is not a key of celery_worker_instances"
            " (keys: name, queues, pool, kind, nodes, concurrency, autoscale, prefetch_multiplier,"
            " soft_time_limit, time_limit, timeout_stop_sec, max_tasks_per_child,"
            " max_memory_per_child_kb, memory_max). Fix its name in the inventory, or remove it.",
        ],
    ),
    (
        "two at once, in name order",
        {"redis_port": "1", "celery_worker_nodes": "2"},
        [
            'celery_worker_nodes must be a whole number, got the string "2". Set it in the'
            f" inventory as a whole number; {dash_e('celery_worker_nodes')}",
            'redis_port must be a whole number, got the string "1". Set it in the inventory as a'
            f" whole number; {dash_e('redis_port')}",
        ],
    ),
]


@pytest.mark.parametrize(
    ("variables", "expected"), [c[1:] for c in TYPE_CASES], ids=[c[0] for c in TYPE_CASES]
)
def test_type_errors(variables: dict[str, Any], expected: list[str]) -> None:
    assert bundle_validate.type_errors(variables, ROLES) == expected


def test_every_role_is_read() -> None:
    assert set(ROLES) == {p.name for p in (REPO / "roles").iterdir() if p.is_dir()}
    assert "celery_worker_beat" in ROLES["celery_worker"]
    assert "celery_beat" not in ROLES


class Untemplatable(Mapping[str, object]):
    """Variables as Ansible hands them over, one of which fails to template."""

    def __init__(self, data: dict[str, Any], broken: str) -> None:
        self.data, self.broken = data, broken

    def __getitem__(self, key: str) -> object:
        if key == self.broken:
            raise UndefinedError("'app_release_current' is undefined")
        return self.data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.data)

    def __len__(self) -> int:
        return len(self.data)


def test_a_value_that_does_not_template_is_left_to_the_role() -> None:
    variables = Untemplatable(
        {"celery_worker_release": "{{ x }}", "redis_port": "x"}, "celery_worker_release"
    )
    assert [m.split(" ")[0] for m in bundle_validate.type_errors(variables, ROLES)] == [
        "redis_port"
    ]


def test_a_secret_is_not_shown() -> None:
    roles = {"demo": {"demo_pin": {"type": "int", "no_log": True}}}
    assert bundle_validate.type_errors({"demo_pin": "1234"}, roles) == [
        "demo_pin must be a whole number, got a value hidden by no_log. Set it in the inventory"
        f" as a whole number; {dash_e('demo_pin')}"
    ]


NAME_CASES: list[tuple[str, list[str], list[str]]] = [
    (
        "close match",
        ["redis_maxmemroy_policy"],
        [
            "redis_maxmemroy_policy is not a variable of any role (did you mean"
            " redis_maxmemory_policy?). Fix its name in the inventory, or remove it."
        ],
    ),
    (
        "close match in another role",
        ["celery_worker_redis_maxmemory_policy", "celery_worker_concurency"],
        [
            "celery_worker_concurency is not a variable of any role (did you mean"
            " celery_worker_concurrency?). Fix its name in the inventory, or remove it.",
            "celery_worker_redis_maxmemory_policy is not a variable of any role (did you mean"
            " redis_maxmemory_policy?). Fix its name in the inventory, or remove it.",
        ],
    ),
    (
        "a retired role's variables",
        ["celery_beat_loglevel", "celery_beat_enabled", "celery_beat_something"],
        [
            "celery_beat_enabled is no longer a variable (the celery_beat role became part of"
            " celery_worker, which runs beat on its host; put the beat host in group"
            " celery_beat). Fix its name in the inventory, or remove it.",
            "celery_beat_loglevel is no longer a variable (the celery_beat role became part of"
            " celery_worker, which runs beat on its host; use celery_worker_beat_loglevel)."
            " Fix its name in the inventory, or remove it.",
        ],
    ),
    (
        "a renamed variable",
        ["redis_results_instance"],
        [
            "redis_results_instance is no longer a variable (it was renamed: use"
            " redis_results_server). Fix its name in the inventory, or remove it."
        ],
    ),
    (
        "no close match",
        ["redis_frobnicate"],
        [
            "redis_frobnicate is not a variable of any role; the redis role's variables are in"
            " roles/redis/meta/argument_specs.yml. Fix its name in the inventory, or remove it."
        ],
    ),
    (
        "declared names, other names, the roles' own names",
        [
            "redis_port",
            "celery_worker_serial",
            "app_release_build_dir",
            "celery_worker_beat",
            "celery_worker_beat_loglevel",
            "vault_redis_password",
            "validate_fleet",
            "redis",
            "redis_",
            "__redis_config",
            "__celery_worker_nodes",
            "redis__live",
            "celery_worker__fleet",
            "app_release__build",
            "app_release_current",
        ],
        [],
    ),
]


@pytest.mark.parametrize(
    ("names", "expected"), [c[1:] for c in NAME_CASES], ids=[c[0] for c in NAME_CASES]
)
def test_unknown_variables(names: list[str], expected: list[str]) -> None:
    assert bundle_validate.unknown_variables(names, ROLES) == expected


def test_published_facts_are_set_by_a_role() -> None:
    tasks = "\n".join(p.read_text() for p in (REPO / "roles").glob("*/tasks/*.yml"))
    for name in bundle_validate.PUBLISHED_FACTS:
        assert re.search(rf"set_fact:\n(\s+\w+: .*\n)*\s+{name}:", tasks), name


def test_filters_carry_the_bundle_prefix() -> None:
    for module in (bundle_validate, bundle_worker_validate):
        names = module.FilterModule().filters()
        assert names
        assert all(n.startswith("bundle_") for n in names), names


# --- the fleet -----------------------------------------------------------------------------

ROUTES = {"taskapp.process_data": "cpu", "taskapp.fetch_url": "io"}


def fact(queues: list[str], **over: object) -> dict[str, Any]:
    return {
        "queues": queues,
        "default_queue": "celery",
        "task_routes": ROUTES,
        "beat_schedule": {},
    } | over


TICK = {"tick": {"task": "taskapp.record", "every": 10}}
ALL = ["celery", "cpu", "io"]
DIFFER = (
    "celery_worker_task_routes, celery_worker_default_queue and celery_worker_beat_schedule differ"
    " between hosts of celery_workers: producers and workers would route differently. Set them"
    " once, in group_vars/celery_workers.yml, not in host_vars."
)

# (case id, fleet facts, celery_workers, celery_beat, play hosts, messages)
FLEET_CASES: list[tuple[str, list[dict[str, Any]], list[str], list[str], list[str], list[str]]] = [
    (
        "good fleet",
        [fact(["celery", "cpu"], beat_schedule=TICK), fact(["io"], beat_schedule=TICK)],
        ["w1", "w2"],
        ["w2"],
        ["r", "w1", "w2"],
        [],
    ),
    (
        "routes differ",
        [fact(ALL), fact(ALL, task_routes={})],
        ["w1", "w2"],
        [],
        ["w1", "w2"],
        [DIFFER],
    ),
    (
        "schedules differ",
        [fact(ALL, beat_schedule=TICK), fact(ALL)],
        ["w1", "w2"],
        ["w1"],
        ["w1", "w2"],
        [DIFFER],
    ),
    (
        "a queue nobody serves",
        [fact(["celery", "cpu"])],
        ["w1"],
        [],
        ["w1"],
        [
            "celery_worker_task_routes / celery_worker_default_queue / celery_worker_beat_schedule"
            " send tasks to io, which no worker instance consumes: those tasks would wait forever."
            " Add the queue to celery_worker_queues or to an instance's queues in"
            " celery_worker_instances, or route the task to a served queue (served: celery, cpu)."
        ],
    ),
    ("a --limit run cannot tell", [fact(["celery", "cpu"])], ["w1", "w2"], [], ["w1"], []),
    (
        "a scheduled queue nobody serves",
        [fact(ALL, beat_schedule={"tick": TICK["tick"] | {"queue": "beat"}})],
        ["w1"],
        ["w1"],
        ["w1"],
        [
            "celery_worker_task_routes / celery_worker_default_queue / celery_worker_beat_schedule"
            " send tasks to beat, which no worker instance consumes: those tasks would wait"
            " forever. Add the queue to celery_worker_queues or to an instance's queues in"
            " celery_worker_instances, or route the task to a served queue (served: celery, cpu,"
            " io)."
        ],
    ),
    (
        "two beat hosts",
        [fact(ALL, beat_schedule=TICK)] * 2,
        ["w1", "w2"],
        ["w1", "w2"],
        ["w1", "w2"],
        [
            "celery_beat: the group has 2 hosts (w1, w2), but exactly one beat process may run,"
            " or every periodic task runs once per beat host. Keep one host in group celery_beat."
        ],
    ),
    (
        "schedule but no beat host",
        [fact(ALL, beat_schedule=TICK)],
        ["w1"],
        [],
        ["w1"],
        [
            "celery_beat: celery_worker_beat_schedule defines periodic tasks (tick) but group"
            " celery_beat has no host, so nothing would send them. Put one host of celery_workers"
            " in group celery_beat, or empty the schedule."
        ],
    ),
    (
        "beat host that is not a worker",
        [fact(ALL)],
        ["w1"],
        ["r"],
        ["r", "w1"],
        [
            "celery_beat: r must also be in group celery_workers: beat runs from the release and"
            " configuration the celery_worker role installs there."
        ],
    ),
]


@pytest.mark.parametrize(
    ("fleet", "workers", "beat", "play_hosts", "expected"),
    [c[1:] for c in FLEET_CASES],
    ids=[c[0] for c in FLEET_CASES],
)
def test_fleet_errors(
    fleet: list[dict[str, Any]],
    workers: list[str],
    beat: list[str],
    play_hosts: list[str],
    expected: list[str],
) -> None:
    assert bundle_validate.fleet_errors(fleet, workers, beat, play_hosts) == expected


def test_fleet_filter_reads_the_groups() -> None:
    groups = {"celery_workers": ["w1"], "redis": ["r"]}
    assert bundle_validate.bundle_fleet_errors([fact(ALL)], groups, ["r", "w1"]) == []


# --- worker instances ----------------------------------------------------------------------

# One node of __celery_worker_nodes (roles/celery_worker/vars/main.yml), as the role's
# defaults expand an instance on a host of one vCPU.
NODE: dict[str, Any] = {
    "name": "cpu",
    "instance": "cpu",
    "node": 1,
    "nodes": 1,
    "kind": "short",
    "queues": ["celery", "cpu"],
    "pool": "prefork",
    "concurrency": 1,
    "autoscale": [],
    "prefetch_multiplier": 1,
    "soft_time_limit": 300,
    "time_limit": 330,
    "min_stop_timeout": 340,
    "timeout_stop_sec": 370,
    "max_tasks_per_child": 0,
    "max_memory_per_child_kb": 0,
    "memory_max": "infinity",
}
ENTRY = "celery_worker_instances entry cpu: "

# (case id, changes to NODE, messages)
NODE_CASES: list[tuple[str, dict[str, Any], list[str]]] = [
    ("good node", {}, []),
    ("good solo node", {"pool": "solo"}, []),
    ("good autoscale", {"autoscale": [4, 0]}, []),
    ("bad name", {"name": "a b"}, [ENTRY + "the name may hold only letters, digits, - and _."]),
    (
        "queue with a space",
        {"queues": ["celery", "x y"]},
        [
            ENTRY + "queue 'x y' may hold only letters, digits and . : - _ (it goes on the"
            " worker's command line)."
        ],
    ),
    (
        "name with a newline",
        {"name": "cpu\n"},
        [ENTRY + "the name may hold only letters, digits, - and _."],
    ),
    (
        "zero nodes",
        {"nodes": 0},
        [
            ENTRY + "nodes must be at least 1 (got 0); leave it unset to derive it from the vCPUs"
            " and the kind."
        ],
    ),
    (
        "zero concurrency",
        {"concurrency": 0},
        [
            ENTRY
            + "concurrency must be at least 1 (got 0); leave it unset to derive it from the vCPUs."
        ],
    ),
    (
        "solo with concurrency",
        {"pool": "solo", "concurrency": 4},
        [
            ENTRY
            + "the solo pool runs one task at a time (got concurrency 4); use prefork or threads."
        ],
    ),
    (
        "per-child limit without prefork",
        {"pool": "threads", "max_tasks_per_child": 50},
        [
            ENTRY
            + "max_tasks_per_child and max_memory_per_child_kb replace prefork pool processes;"
            " the threads pool has none. Use pool prefork or set them to 0."
        ],
    ),
    ("no queue", {"queues": []}, [ENTRY + "it must consume at least one queue (got [])."]),
    (
        "autoscale min above max",
        {"autoscale": [2, 4]},
        [
            ENTRY + "autoscale is [max, min] with max at least 1 and min between 0 and max, prefork"
            " pool only (got [2, 4])."
        ],
    ),
    (
        "autoscale on threads",
        {"pool": "threads", "autoscale": [8, 2]},
        [
            ENTRY + "autoscale is [max, min] with max at least 1 and min between 0 and max, prefork"
            " pool only (got [8, 2])."
        ],
    ),
    (
        "zero prefetch",
        {"prefetch_multiplier": 0},
        [ENTRY + "prefetch_multiplier must be at least 1 (got 0)."],
    ),
    (
        "soft limit at the hard limit",
        {"soft_time_limit": 330},
        [ENTRY + "soft_time_limit (330) must be below time_limit (330)."],
    ),
    (
        "hard limit at the visibility timeout",
        {
            "soft_time_limit": 3500,
            "time_limit": 3600,
            "min_stop_timeout": 3610,
            "timeout_stop_sec": 3640,
        },
        [
            ENTRY + "time_limit (3600) must be below celery_worker_visibility_timeout (3600): a"
            " task still running then is delivered again and runs twice."
        ],
    ),
    (
        "TimeoutStopSec too short",
        {"timeout_stop_sec": 340},
        [
            ENTRY + "TimeoutStopSec 340 (celery_worker_timeout_stop_sec) is too short for the time"
            " limit: it must exceed time_limit plus celery_worker_soft_shutdown_timeout (340), or a"
            " stop kills running tasks. Leave it unset to derive it."
        ],
    ),
]


@pytest.mark.parametrize(
    ("changes", "expected"), [c[1:] for c in NODE_CASES], ids=[c[0] for c in NODE_CASES]
)
def test_worker_instance_errors(changes: dict[str, Any], expected: list[str]) -> None:
    assert bundle_worker_validate.bundle_worker_instance_errors([NODE | changes], 3600) == expected


def test_an_instance_of_several_nodes_is_reported_once() -> None:
    nodes = [NODE | {"name": f"cpu-{n}", "node": n, "nodes": 2, "concurrency": 0} for n in (1, 2)]
    assert bundle_worker_validate.bundle_worker_instance_errors(nodes, 3600) == [
        ENTRY
        + "concurrency must be at least 1 (got 0); leave it unset to derive it from the vCPUs."
    ]


@pytest.mark.parametrize(
    ("binds", "expected"),
    [
        ([], []),
        (["127.0.0.1", "10.0.0.5", "::1", "fe80::1"], []),
        (["0.0.0.0"], ["redis_bind: '0.0.0.0' is a wildcard"]),
        (["::", "*"], ["redis_bind: '::' is a wildcard", "redis_bind: '*' is a wildcard"]),
        (["redis1.example.internal"], ["redis_bind: 'redis1.example.internal' is not an IP"]),
        (["10.0.0.5/24"], ["redis_bind: '10.0.0.5/24' is not an IP"]),
        ("10.0.0.5", []),
    ],
)
def test_redis_bind_errors(binds: object, expected: list[str]) -> None:
    errors = bundle_redis_validate.bundle_redis_bind_errors(binds)
    assert len(errors) == len(expected), errors
    for error, start in zip(errors, expected, strict=True):
        assert error.startswith(start), error


@pytest.mark.parametrize(
    ("queues", "expected"),
    [
        ("celery", []),
        (["celery", "cpu.high", "io:2", "a_b-c"], []),
        ({"taskapp.x": "cpu", "taskapp.y": "io"}, []),
        ("high priority", ["V: queue 'high priority' may hold only letters"]),
        (["ok", "a,b", "c d"], ["V: queue 'a,b' may hold", "V: queue 'c d' may hold"]),
        ({"taskapp.x": "cpu io"}, ["V: queue 'cpu io' may hold"]),
        ("", []),  # empty: the role's own "is empty" check names it
    ],
)
def test_queue_name_errors(queues: object, expected: list[str]) -> None:
    errors = bundle_worker_validate.bundle_queue_name_errors(queues, "V")
    assert len(errors) == len(expected), errors
    for error, start in zip(errors, expected, strict=True):
        assert error.startswith(start), error
