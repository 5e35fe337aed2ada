"""The celery_worker role's per-instance checks (tasks/validate.yml).

In the role's own filter_plugins/ because Ansible loads it whenever it loads the
role, whatever the configuration (the repository's ansible.cfg, Molecule's,
ansible-lint's).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

NAME = re.compile(r"[A-Za-z0-9_-]+")
# A queue name reaches `celery worker --queues a,b` through the unit's environment, where a
# space splits the arguments and a comma the queues: the worker would not start.
QUEUE = re.compile(r"[A-Za-z0-9_.:-]+")
QUEUE_RULE = "may hold only letters, digits and . : - _ (it goes on the worker's command line)"


def _number(value: object) -> float | None:
    """The value if it is a number (true and false are not), else None."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return value
    return None


def _at_least(value: object, low: float) -> bool:
    number = _number(value)
    return number is not None and number >= low


def _below(low: object, high: object) -> bool:
    a, b = _number(low), _number(high)
    return a is not None and b is not None and a < b


def _list(value: object) -> str:
    """A list as Jinja's ~ showed it in the messages: Python's repr."""
    return str(list(value)) if isinstance(value, list | tuple) else str(value)


def node_errors(node: Mapping[str, Any], visibility_timeout: object) -> list[str]:
    """What is wrong with one expanded node of __celery_worker_instances."""
    pool = node.get("pool")
    concurrency = node.get("concurrency")
    autoscale = node.get("autoscale") or []
    soft, hard = node.get("soft_time_limit"), node.get("time_limit")
    stop, min_stop = node.get("timeout_stop_sec"), node.get("min_stop_timeout")
    errors: list[str] = []
    if not NAME.fullmatch(str(node.get("name", ""))):
        errors.append("the name may hold only letters, digits, - and _.")
    if not _at_least(node.get("nodes"), 1):
        errors.append(
            f"nodes must be at least 1 (got {node.get('nodes')}); leave it unset to derive it"
            " from the vCPUs and the kind."
        )
    if not _at_least(concurrency, 1):
        errors.append(
            f"concurrency must be at least 1 (got {concurrency}); leave it unset to derive it"
            " from the vCPUs."
        )
    if pool == "solo" and concurrency != 1:
        errors.append(
            f"the solo pool runs one task at a time (got concurrency {concurrency});"
            " use prefork or threads."
        )
    if pool != "prefork" and (
        node.get("max_tasks_per_child") != 0 or node.get("max_memory_per_child_kb") != 0
    ):
        errors.append(
            "max_tasks_per_child and max_memory_per_child_kb replace prefork pool processes;"
            f" the {pool} pool has none. Use pool prefork or set them to 0."
        )
    if not node.get("queues"):
        errors.append(
            f"it must consume at least one queue (got {_list(node.get('queues') or [])})."
        )
    for queue in node.get("queues") or []:
        if not QUEUE.fullmatch(str(queue)):
            errors.append(f"queue {queue!r} {QUEUE_RULE}.")
    if autoscale and not (
        len(autoscale) == 2
        and _at_least(autoscale[0], 1)
        and _at_least(autoscale[1], 0)
        and not _below(autoscale[0], autoscale[1])
        and pool == "prefork"
    ):
        errors.append(
            "autoscale is [max, min] with max at least 1 and min between 0 and max,"
            f" prefork pool only (got {_list(autoscale)})."
        )
    if not _at_least(node.get("prefetch_multiplier"), 1):
        errors.append(
            f"prefetch_multiplier must be at least 1 (got {node.get('prefetch_multiplier')})."
        )
    if not _below(soft, hard):
        errors.append(f"soft_time_limit ({soft}) must be below time_limit ({hard}).")
    if not _below(hard, visibility_timeout):
        errors.append(
            f"time_limit ({hard}) must be below celery_worker_visibility_timeout"
            f" ({visibility_timeout}): a task still running then is delivered again and runs"
            " twice."
        )
    if not _below(min_stop, stop):
        errors.append(
            f"TimeoutStopSec {stop} (celery_worker_timeout_stop_sec) is too short for the time"
            " limit: it must exceed time_limit plus celery_worker_soft_shutdown_timeout"
            f" ({min_stop}), or a stop kills running tasks. Set 0 to derive it."
        )
    return errors


def bundle_worker_instance_errors(
    nodes: Sequence[Mapping[str, Any]], visibility_timeout: object
) -> list[str]:
    """Filter: __celery_worker_instances | bundle_worker_instance_errors(visibility timeout).

    One message per problem of an instance, named by the instance: the nodes of
    one instance share its settings, so each problem is reported once.
    """
    messages: list[str] = []
    for node in nodes:
        for error in node_errors(node, visibility_timeout):
            message = f"celery_worker_instances entry {node.get('instance')}: {error}"
            if message not in messages:
                messages.append(message)
    return messages


def bundle_queue_name_errors(queues: object, variable: str) -> list[str]:
    """Filter: the queue names a routing variable holds | bundle_queue_name_errors(its name).

    One message per name a worker could not be started with (see QUEUE).
    """
    if isinstance(queues, Mapping):
        names = list(queues.values())
    elif isinstance(queues, list | tuple):
        names = list(queues)
    else:
        names = [queues]
    return [
        f"{variable}: queue {name!r} {QUEUE_RULE}. Rename the queue."
        for name in names
        if isinstance(name, str) and name and not QUEUE.fullmatch(name)
    ]


class FilterModule:
    """The celery_worker role's filters."""

    def filters(self) -> dict[str, Any]:
        return {
            "bundle_worker_instance_errors": bundle_worker_instance_errors,
            "bundle_queue_name_errors": bundle_queue_name_errors,
        }
