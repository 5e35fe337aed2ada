"""The celery_worker role's worker topology: its instances expanded into worker nodes.

The filter ``celery_worker_topology`` (roles/celery_worker/vars/main.yml calls it to
define ``__celery_worker_nodes``) fills in each entry of ``celery_worker_instances``
from the host-wide defaults (the ``celery_worker_*`` variables, passed as a mapping keyed
by the instance keys they stand for) and the host's vCPUs, and expands it into its nodes.
Ansible loads it from the role's filter_plugins directory whenever it loads the role.

It checks nothing: tasks/validate.yml runs the role's checks on its output, so it
passes odd input (a solo pool with concurrency 3, 0 nodes, node names that collide)
through as it comes, for those checks to refuse with a message.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypedDict

# The keys of the defaults mapping. Each one but the last three is also an instance key
# that overrides it.
DEFAULT_KEYS = (
    "kind",
    "pool",
    "nodes",
    "concurrency",
    "queues",
    "prefetch_multiplier",
    "soft_time_limit",
    "time_limit",
    "timeout_stop_sec",
    "max_tasks_per_child",
    "max_memory_per_child_kb",
    "memory_max",
    "io_concurrency_multiplier",
    "soft_shutdown_timeout",
    "stop_margin",
)


class WorkerNode(TypedDict):
    """One worker node: one systemd unit celery-worker@NAME, worker NAME@HOST."""

    name: str
    instance: str
    node: int
    nodes: int
    kind: str
    queues: list[str]
    pool: str
    concurrency: int
    autoscale: list[int]
    prefetch_multiplier: int
    soft_time_limit: int
    time_limit: int
    min_stop_timeout: int
    timeout_stop_sec: int
    max_tasks_per_child: int
    max_memory_per_child_kb: int
    memory_max: str


def celery_worker_topology(
    instances: Sequence[Mapping[str, Any]], defaults: Mapping[str, Any], vcpus: int
) -> list[WorkerNode]:
    """Each instance with every key filled in from the defaults, expanded into its nodes.

    Node 1 of instance NAME is unit celery-worker@NAME (worker NAME@HOST), node N>1
    celery-worker@NAME-N. An unset size or pool comes from the host's vCPUs and the
    instance's kind (see celery_worker_kind): a ``short`` instance whose sizes are unset
    runs one solo node per vCPU, because one node's consumer process tops out near 1.1k
    tasks/s however many children it has, and a solo node spends nothing handing tasks to
    a child (BENCHMARKS.md); a ``long`` instance runs one prefork node of one process per
    vCPU. An unset TimeoutStopSec comes from the instance's hard time limit, so a stop
    waits for the longest task the worker may still be running.

    An instance key that is present overrides its default even when it is null, as
    Jinja's ``default`` filter does, except for ``nodes`` and ``concurrency``, where null
    means unset: a null ``pool`` is derived from the kind whatever the host-wide pool, and
    a null ``timeout_stop_sec`` is derived from the time limit. Only null means unset: a
    ``timeout_stop_sec`` of 0 stays 0, for tasks/validate.yml to refuse.
    """
    missing = [key for key in DEFAULT_KEYS if key not in defaults]
    if missing:
        raise KeyError(f"celery_worker_topology: the defaults lack {', '.join(missing)}")
    out: list[WorkerNode] = []
    for i in instances:
        kind = i.get("kind", defaults["kind"])
        concurrency = i.get("concurrency")
        if concurrency is None:
            concurrency = defaults["concurrency"]
        autoscale = i.get("autoscale", [])
        sized = concurrency is not None or len(autoscale) > 0
        max_tasks_per_child = i.get("max_tasks_per_child", defaults["max_tasks_per_child"])
        max_memory_per_child_kb = i.get(
            "max_memory_per_child_kb", defaults["max_memory_per_child_kb"]
        )
        pool = i.get("pool", defaults["pool"])
        if pool is None:
            pool = (
                "solo"
                if kind == "short"
                and not sized
                and max_tasks_per_child == 0
                and max_memory_per_child_kb == 0
                else "prefork"
            )
        nodes = i.get("nodes")
        if nodes is None:
            nodes = defaults["nodes"]
        if nodes is None:
            nodes = vcpus if kind == "short" and pool != "threads" and not sized else 1
        if concurrency is None:
            if pool == "solo" or (kind == "short" and pool == "prefork" and nodes > 1):
                concurrency = 1
            elif pool == "threads":
                concurrency = vcpus * defaults["io_concurrency_multiplier"]
            else:
                concurrency = vcpus
        time_limit = i.get("time_limit", defaults["time_limit"])
        timeout_stop_sec = i.get("timeout_stop_sec", defaults["timeout_stop_sec"])
        if timeout_stop_sec is None:
            timeout_stop_sec = (
                time_limit + defaults["soft_shutdown_timeout"] + defaults["stop_margin"]
            )
        for n in range(1, max([nodes, 1]) + 1):
            out.append(
                {
                    "name": i["name"] if n == 1 else f"{i['name']}-{n}",
                    "instance": i["name"],
                    "node": n,
                    "nodes": nodes,
                    "kind": kind,
                    "queues": i.get("queues", defaults["queues"]),
                    "pool": pool,
                    "concurrency": concurrency,
                    "autoscale": autoscale,
                    "prefetch_multiplier": i.get(
                        "prefetch_multiplier", defaults["prefetch_multiplier"]
                    ),
                    "soft_time_limit": i.get("soft_time_limit", defaults["soft_time_limit"]),
                    "time_limit": time_limit,
                    "min_stop_timeout": time_limit + defaults["soft_shutdown_timeout"],
                    "timeout_stop_sec": timeout_stop_sec,
                    "max_tasks_per_child": max_tasks_per_child,
                    "max_memory_per_child_kb": max_memory_per_child_kb,
                    "memory_max": i.get("memory_max", defaults["memory_max"]),
                }
            )
    return out


class FilterModule:
    """Ansible's entry point for the filters in this file."""

    def filters(self) -> dict[str, Callable[..., Any]]:
        return {"celery_worker_topology": celery_worker_topology}
