"""The celery_worker role's checks (tasks/validate.yml): its settings, its password, each
instance's nodes and the queue names.

In the role's own filter_plugins/ because Ansible loads it whenever it loads the
role, whatever the configuration (the repository's ansible.cfg, Molecule's,
ansible-lint's).

Each filter returns the messages of the rules that fail, one per problem, each naming the
variable and the fix; an empty list means the input is good. A value of the wrong type is
refused by the rule it breaks (the validate play's type check names the type first).
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
    """What is wrong with one expanded node of __celery_worker_nodes."""
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
            f" ({min_stop}), or a stop kills running tasks. Leave it unset to derive it."
        )
    return errors


def bundle_worker_instance_errors(
    nodes: Sequence[Mapping[str, Any]], visibility_timeout: object
) -> list[str]:
    """Filter: __celery_worker_nodes | bundle_worker_instance_errors(visibility timeout).

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


POOLS = (None, "prefork", "threads", "solo")
# A variable whose unset value (null) derives it, and what it is derived from: 0 (or an
# empty string) is not another way to say so, since it reads as a value (a port 0, a stop
# timeout of 0 seconds).
DERIVED_WHEN_UNSET = {
    "celery_worker_redis_result_host": "use celery_worker_redis_host",
    "celery_worker_redis_result_port": "use celery_worker_redis_port",
    "celery_worker_timeout_stop_sec": (
        "derive it from celery_worker_time_limit, celery_worker_soft_shutdown_timeout and"
        " celery_worker_stop_margin"
    ),
}
# A serial batch: a number of hosts, or a share of them.
SERIAL_PERCENT = re.compile(r"([0-9]+)%")


def _zero_given(name: str, shown: str = "0") -> str:
    return (
        f"{name} is {shown}, which is not how the bundle says 'derive it': leave {name} unset"
        f" (remove it, or set it to null) to {DERIVED_WHEN_UNSET[name]}."
    )


def _port(value: object) -> bool:
    return _at_least(value, 1) and not _below(65535, value)


def _names(entries: object) -> list[object]:
    if not isinstance(entries, list | tuple):
        return []
    return [e.get("name") if isinstance(e, Mapping) else None for e in entries]


def _duplicates(names: Sequence[object]) -> bool:
    return len({str(n) for n in names}) != len(names)


def _schedule_ok(schedule: object) -> bool:
    if not isinstance(schedule, Mapping):
        return False
    return all(
        isinstance(entry, Mapping) and "task" in entry and _at_least(entry.get("every"), 1)
        for entry in schedule.values()
    )


def _routes_ok(routes: object) -> bool:
    if not isinstance(routes, Mapping):
        return False
    return all(isinstance(queue, str) and queue != "" for queue in routes.values())


def _serial_ok(serial: object) -> bool:
    """What Ansible's play keyword serial takes: a whole number of hosts (at least 1), a share
    of them (1% to 100%), or a list of those (batch sizes in turn, the last repeated)."""
    if isinstance(serial, list | tuple):
        return len(serial) > 0 and all(_serial_ok(s) and not isinstance(s, list) for s in serial)
    if _number(serial) is not None:
        return isinstance(serial, int) and serial >= 1
    if not isinstance(serial, str):
        return False
    if serial.isdigit():
        return int(serial) >= 1
    percent = SERIAL_PERCENT.fullmatch(serial)
    return percent is not None and 1 <= int(percent.group(1)) <= 100


def _beat_errors(v: Mapping[str, Any]) -> list[str]:
    """celery_worker_beat must agree with group celery_beat, which validation holds at one."""
    host = v.get("inventory_hostname")
    groups = v.get("groups") or {}
    in_group = host in (groups.get("celery_beat") or [])
    beat = v.get("celery_worker_beat", in_group)
    if beat == in_group:
        return []
    return [
        f"celery_worker_beat is {str(beat).lower()} on {host}, which is"
        f" {'' if in_group else 'not '}in group celery_beat: beat runs on the host of that"
        " group, which validation holds at one, so two beats never send every periodic task"
        " twice. Remove celery_worker_beat from the inventory and put the beat host in group"
        " celery_beat."
    ]


def settings_errors(v: Mapping[str, Any]) -> list[str]:
    """Messages for the role's host-wide settings (v: the host's variables, by name).

    __celery_worker_nodes (vars/main.yml) is the instances expanded into their nodes.
    """
    release = v.get("celery_worker_release")
    group = v.get("celery_worker_redis_group")
    port, result_port = v.get("celery_worker_redis_port"), v.get("celery_worker_redis_result_port")
    concurrency, pool = v.get("celery_worker_concurrency"), v.get("celery_worker_pool")
    nodes = v.get("celery_worker_nodes")
    multiplier = v.get("celery_worker_io_concurrency_multiplier")
    stop = v.get("celery_worker_timeout_stop_sec")
    routes, schedule = v.get("celery_worker_task_routes"), v.get("celery_worker_beat_schedule")
    soft, hard = v.get("celery_worker_soft_time_limit"), v.get("celery_worker_time_limit")
    visibility = v.get("celery_worker_visibility_timeout")
    prefetch = v.get("celery_worker_prefetch_multiplier")
    instances = v.get("celery_worker_instances")
    node_names = _names(v.get("__celery_worker_nodes"))
    serial = v.get("celery_worker_serial", 1)
    kept = v.get("celery_worker_releases_kept", 3)
    errors: list[str] = []
    if not (isinstance(release, Mapping) and "id" in release and "archive" in release):
        errors.append(
            "celery_worker_release is not set: run the app_release role first"
            " (ansible-playbook deploy.yml does)."
        )
    if not v.get("celery_worker_redis_host"):
        errors.append(
            "celery_worker_redis_host is empty. Leave it unset to reach the first host of"
            f" group {group}, or name the Redis host the workers reach."
        )
    if not _port(port):
        errors.append(f"celery_worker_redis_port must be between 1 and 65535 (got {port}).")
    if v.get("celery_worker_redis_result_host") == "":
        errors.append(_zero_given("celery_worker_redis_result_host", "empty"))
    if result_port == 0 and _number(result_port) is not None:
        errors.append(_zero_given("celery_worker_redis_result_port"))
    elif result_port is not None and not _port(result_port):
        errors.append(
            "celery_worker_redis_result_port must be between 1 and 65535, or unset for"
            f" celery_worker_redis_port (got {result_port})."
        )
    if concurrency is not None and not _at_least(concurrency, 1):
        errors.append(
            f"celery_worker_concurrency must be at least 1 (got {concurrency}): a worker with"
            " no processes consumes nothing. Leave it unset for one process per vCPU."
        )
    if pool not in POOLS:
        errors.append(
            f"celery_worker_pool must be prefork, threads or solo (got {pool}). Leave it unset"
            " to follow celery_worker_kind (solo nodes for short tasks)."
        )
    if nodes is not None and not _at_least(nodes, 1):
        errors.append(
            f"celery_worker_nodes must be at least 1 (got {nodes}). Leave it unset to derive"
            " it from the vCPUs and celery_worker_kind."
        )
    if not _at_least(multiplier, 1):
        errors.append(
            f"celery_worker_io_concurrency_multiplier must be at least 1 (got {multiplier})."
        )
    if stop == 0 and _number(stop) is not None:
        errors.append(_zero_given("celery_worker_timeout_stop_sec"))
    elif stop is not None and not _at_least(stop, 1):
        errors.append(
            f"celery_worker_timeout_stop_sec must be at least 1 second (got {stop}), or unset"
            " to derive it."
        )
    if not v.get("celery_worker_default_queue"):
        errors.append(
            "celery_worker_default_queue is empty: name the queue of tasks no route names."
        )
    if not _routes_ok(routes):
        errors.append(
            f"celery_worker_task_routes must map each task name to a queue name (got {routes})."
        )
    if not _schedule_ok(schedule):
        errors.append(
            "celery_worker_beat_schedule entries need a task and every (seconds, at least 1),"
            " for example tick: {task: myapp.tasks.cleanup, every: 60}"
            f" (got {schedule})."
        )
    errors += _beat_errors(v)
    if not _below(soft, hard):
        errors.append(
            f"celery_worker_soft_time_limit ({soft}) must be below celery_worker_time_limit"
            f" ({hard}), or tasks never get the chance to clean up."
        )
    if not _below(hard, visibility):
        errors.append(
            f"celery_worker_time_limit ({hard}) must be below celery_worker_visibility_timeout"
            f" ({visibility}): a task still running when the visibility timeout expires is"
            " delivered again and runs twice. Raise the visibility timeout or lower the time"
            " limit."
        )
    if not _at_least(prefetch, 1):
        errors.append(f"celery_worker_prefetch_multiplier must be at least 1 (got {prefetch}).")
    if not instances:
        errors.append(
            "celery_worker_instances is empty: a worker host needs at least one instance."
        )
    elif _duplicates(_names(instances)):
        errors.append(f"celery_worker_instances has duplicate names: {_names(instances)}.")
    if _duplicates(node_names):
        errors.append(
            f"celery_worker_instances: two worker nodes share a name ({node_names}); node N of"
            " instance NAME is NAME-N, so rename the instance that ends in -N."
        )
    if not _at_least(kept, 2):
        errors.append(
            f"celery_worker_releases_kept must be at least 2 (got {kept}): the current release"
            " and the one before it, which a failed deploy's rollback and playbooks/rollback.yml"
            " go back to."
        )
    if not _serial_ok(serial):
        errors.append(
            f"celery_worker_serial must be a number of hosts (at least 1), a percentage of them"
            f" from 1% to 100% (25%), or a list of those (got {serial!r}): playbooks/workers.yml"
            " deploys that many worker hosts at a time. Leave it unset for one at a time."
        )
    return errors


def bundle_worker_settings_errors(variables: Mapping[str, Any]) -> list[str]:
    """Filter: vars | bundle_worker_settings_errors -> a message per broken settings rule."""
    return settings_errors(variables)


def bundle_worker_password_errors(password: object) -> list[str]:
    """Filter: celery_worker_redis_password | bundle_worker_password_errors (under no_log).

    The message never shows the password.
    """
    if password is not None and str(password) != "":
        return []
    return [
        "celery_worker_redis_password is empty. It follows the Redis host's password for the"
        " workers: set redis_password (redis_auth_mode requirepass) or redis_acl_celery_password"
        " (acl) from the inventory's vault file, for example"
        ' redis_acl_celery_password: "{{ vault_redis_celery_password }}".'
    ]


class FilterModule:
    """The celery_worker role's filters."""

    def filters(self) -> dict[str, Any]:
        return {
            "bundle_worker_instance_errors": bundle_worker_instance_errors,
            "bundle_queue_name_errors": bundle_queue_name_errors,
            "bundle_worker_settings_errors": bundle_worker_settings_errors,
            "bundle_worker_password_errors": bundle_worker_password_errors,
        }
