"""Filters for playbooks/validate.yml: the inventory checks that span the roles.

They live beside the playbooks because Ansible loads a playbook's adjacent
filter_plugins/ whenever it loads a playbook from that directory, imported ones
included (deploy.yml imports playbooks/deploy.yml). So they resolve with the
repository's ansible.cfg, with the one Molecule writes for itself and under
ansible-lint, with no plugin path in any configuration.

Each filter returns the messages of the rules that fail, one per problem, each
naming the variable and the fix; an empty list means the input is good.
"""

from __future__ import annotations

import difflib
import functools
import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from jinja2.exceptions import TemplateError

# The bundle's roles, found from this file rather than from the play: a play's
# playbook_dir is Molecule's scenario directory under Molecule.
ROLES_DIR = Path(__file__).resolve().parents[2] / "roles"

# Facts the roles publish for later plays (set_fact), not settings: an
# inventory has no reason to set them, and the run sets them before validation.
# tests/test_validate_plugins.py checks that each is still set by its role.
PUBLISHED_FACTS = frozenset({"app_release_current", "pki_issued"})

# Variables the bundle no longer has (a retired role's, or renamed), and what took their
# place: an inventory that still sets one would otherwise lose the setting without a word.
_BEAT = "the celery_beat role became part of celery_worker, which runs beat on its host"
RETIRED = {
    "celery_beat_enabled": f"{_BEAT}; put the beat host in group celery_beat",
    "celery_beat_loglevel": f"{_BEAT}; use celery_worker_beat_loglevel",
    "celery_beat_app_name": f"{_BEAT}; use celery_worker_app_name",
    "celery_beat_app_module": f"{_BEAT}; use celery_worker_app_module",
    "celery_beat_release": f"{_BEAT}; use celery_worker_release",
    "redis_results_instance": "it was renamed: use redis_results_server",
}

# The argument spec types whose values an inventory can get wrong in a way
# that breaks a template rather than a task: strings and paths take anything.
TYPE_NAMES = {
    "int": "a whole number",
    "float": "a number",
    "bool": "true or false",
    "list": "a list",
    "dict": "a mapping",
}
ELEMENT_NAMES = {
    "int": "whole numbers",
    "float": "numbers",
    "bool": "true or false values",
    "list": "lists",
    "dict": "mappings",
}
HIDDEN = "a value hidden by no_log"

Options = Mapping[str, Mapping[str, Any]]


@functools.cache
def _role_options(roles_dir: str) -> dict[str, dict[str, dict[str, Any]]]:
    """Each role's main entry point options, from every roles/*/meta/argument_specs.yml."""
    options: dict[str, dict[str, dict[str, Any]]] = {}
    for path in sorted(Path(roles_dir).glob("*/meta/argument_specs.yml")):
        specs = yaml.safe_load(path.read_text()) or {}
        main = specs.get("argument_specs", {}).get("main", {})
        options[path.parents[1].name] = dict(main.get("options") or {})
    return options


def role_options(roles_dir: str | Path | None = None) -> dict[str, dict[str, dict[str, Any]]]:
    """Role name to its declared options (the bundle's roles unless roles_dir is given)."""
    return _role_options(str(roles_dir or ROLES_DIR))


def _declared(roles: Mapping[str, Options]) -> dict[str, Mapping[str, Any]]:
    return {name: opt for options in roles.values() for name, opt in options.items()}


def _plain(value: object) -> object:
    """The value as plain Python data (Ansible hands filters lazily templated containers)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _show(value: object) -> str:
    """The value as a message shows it: JSON, a string marked as one."""
    shown = json.dumps(_plain(value), default=str)
    return f"the string {shown}" if isinstance(value, str) else shown


def _has_type(value: object, kind: str) -> bool:
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "float":
        return isinstance(value, int | float) and not isinstance(value, bool)
    if kind == "list":
        return isinstance(value, list | tuple)
    if kind == "dict":
        return isinstance(value, Mapping)
    return True


def _entry_label(entry: object, position: int) -> str:
    name = entry.get("name") if isinstance(entry, Mapping) else None
    return name if isinstance(name, str) and name else str(position)


def _value_errors(where: str, key: str, value: object, opt: Mapping[str, Any]) -> list[str]:
    """One option's type errors: the value's own type, its elements', its entries' keys.

    where is "" for a role variable, "NAME entry ENTRY: " for a key of a list's entry.
    """
    kind = opt.get("type", "str")
    elements = opt.get("elements")
    if kind in TYPE_NAMES and not _has_type(value, kind):
        what = TYPE_NAMES[kind]
    elif (
        isinstance(value, list | tuple)
        and elements in ELEMENT_NAMES
        and not all(_has_type(v, elements) for v in value)
    ):
        what = f"a list of {ELEMENT_NAMES[elements]}"
    else:
        return _entry_errors(where, key, value, opt)
    shown = HIDDEN if opt.get("no_log") else _show(value)
    if where:
        # -e sets only whole variables: a key inside one comes from YAML or JSON.
        fix = f"Set it in the inventory as {what}."
    else:
        fix = (
            f"Set it in the inventory as {what}; a value given as -e {key}=... is always a"
            f" string, so pass it as JSON instead: -e '{{\"{key}\": ...}}'."
        )
    return [f"{where}{key} must be {what}, got {shown}. {fix}"]


def _entry_errors(where: str, key: str, value: object, opt: Mapping[str, Any]) -> list[str]:
    """The errors of the keys of a list's mappings (celery_worker_instances) or a mapping's:
    unknown keys, and values of the wrong type."""
    suboptions = opt.get("options")
    if not suboptions:
        return []
    kind = opt.get("type", "str")
    entries = list(enumerate(value, 1)) if isinstance(value, list | tuple) else [(0, value)]
    errors: list[str] = []
    for position, entry in entries:
        if not isinstance(entry, Mapping):
            continue  # no element type declared to report it against
        prefix = f"{key} entry {_entry_label(entry, position)}: " if kind == "list" else f"{key}: "
        # A misspelt key is refused by Ansible's own argument validation too, but
        # in a dump of the whole spec; this names the key and the closest one.
        for sub in entry:
            if sub not in suboptions:
                close = difflib.get_close_matches(str(sub), list(suboptions), n=1)
                hint = f"did you mean {close[0]}?" if close else f"keys: {', '.join(suboptions)}"
                errors.append(
                    f"{where}{prefix}{sub} is not a key of {key} ({hint})."
                    " Fix its name in the inventory, or remove it."
                )
        for sub, sub_opt in suboptions.items():
            sub_value = entry.get(sub)
            if sub_value is not None:
                errors += _value_errors(where + prefix, sub, sub_value, sub_opt)
    return errors


def type_errors(variables: Mapping[str, Any], roles: Mapping[str, Options]) -> list[str]:
    """Messages for the declared variables set with a value of the wrong type (and, in
    their nested entries, for keys the spec does not declare)."""
    errors: list[str] = []
    for name, opt in sorted(_declared(roles).items()):
        try:
            if name not in variables:
                continue
            value = variables[name]
            if value is not None:  # null is how the specs spell "unset, derive it"
                errors += _value_errors("", name, value, opt)
        except TemplateError:
            # A value that does not template here (a fact of a later play, a
            # host outside the group that defines it) is left to the role's
            # own checks: it is not a type the inventory got wrong.
            continue
    return errors


def _closest(name: str, prefix: str, declared: list[str]) -> list[str]:
    """The declared name closest to name: first within its role, compared without the
    prefix (which every candidate shares, and which would make any two names look alike),
    then among the other roles' names (redis_maxmemory_policy for
    celery_worker_redis_maxmemory_policy).
    """
    own = {d[len(prefix) :]: d for d in declared if d.startswith(prefix)}
    close = difflib.get_close_matches(name[len(prefix) :], list(own), n=1)
    if close:
        return [own[close[0]]]
    others = [d for d in declared if not d.startswith(prefix)]
    return difflib.get_close_matches(name, others, n=1)


def unknown_variables(variables: Iterable[str], roles: Mapping[str, Options]) -> list[str]:
    """Messages for the variables named like a role's but declared by no role.

    A misspelt name is otherwise silently ignored and the role's default used; so
    is a retired or renamed one (RETIRED), whose message names what replaced it.
    Names whose part after the prefix starts with _ are the roles' own
    (__redis_..., redis__... registered results, celery_worker__fleet).
    """
    declared = sorted(_declared(roles))
    prefixes = sorted((f"{role}_" for role in roles), key=len, reverse=True)
    errors: list[str] = []
    for name in sorted(set(variables)):
        if name in RETIRED:
            errors.append(
                f"{name} is no longer a variable ({RETIRED[name]})."
                " Fix its name in the inventory, or remove it."
            )
            continue
        prefix = next((p for p in prefixes if name.startswith(p)), None)
        if prefix is None or name[len(prefix) :].startswith("_") or not name[len(prefix) :]:
            continue
        if name in declared or name in PUBLISHED_FACTS:
            continue
        close = _closest(name, prefix, declared)
        role = prefix[:-1]
        hint = (
            f" (did you mean {close[0]}?)"
            if close
            else f"; the {role} role's variables are in roles/{role}/meta/argument_specs.yml"
        )
        errors.append(
            f"{name} is not a variable of any role{hint}. Fix its name in the inventory,"
            " or remove it."
        )
    return errors


def bundle_type_errors(variables: Mapping[str, Any], roles_dir: str | None = None) -> list[str]:
    """Filter: vars | bundle_type_errors -> a message per variable of the wrong type."""
    return type_errors(variables, role_options(roles_dir))


def bundle_unknown_variables(variables: Iterable[str], roles_dir: str | None = None) -> list[str]:
    """Filter: vars | bundle_unknown_variables -> a message per misspelt role variable."""
    return unknown_variables(variables, role_options(roles_dir))


def _key(value: object) -> str:
    return json.dumps(_plain(value), sort_keys=True, default=str)


def fleet_errors(
    fleet: Sequence[Mapping[str, Any]],
    workers: Sequence[str],
    beat_hosts: Sequence[str],
    play_hosts: Sequence[str],
) -> list[str]:
    """Messages for the rules over the whole worker fleet, which no single host can see.

    fleet: the celery_worker__fleet fact of each worker host in the play;
    workers, beat_hosts: the inventory's groups celery_workers and celery_beat;
    play_hosts: every host of the play (a --limit run sees only some workers).
    """
    fleet = [dict(f) for f in fleet]
    errors: list[str] = []
    for key in ("task_routes", "default_queue", "beat_schedule"):
        if len({_key(f.get(key)) for f in fleet}) > 1:
            errors.append(
                "celery_worker_task_routes, celery_worker_default_queue and"
                " celery_worker_beat_schedule differ between hosts of celery_workers: producers"
                " and workers would route differently. Set them once, in"
                " group_vars/celery_workers.yml, not in host_vars."
            )
            break
    schedule: dict[str, Any] = dict(fleet[0].get("beat_schedule") or {}) if fleet else {}
    # Every queue a producer may send to: unrouted tasks, routed tasks, periodic tasks.
    needed = {f["default_queue"] for f in fleet if "default_queue" in f}
    needed |= {q for f in fleet for q in (f.get("task_routes") or {}).values()}
    needed |= {e["queue"] for e in schedule.values() if isinstance(e, Mapping) and e.get("queue")}
    served = {q for f in fleet for q in f.get("queues") or []}
    unserved = sorted(needed - served, key=str)
    whole_fleet = not set(workers) - set(play_hosts)
    if whole_fleet and unserved:
        errors.append(
            "celery_worker_task_routes / celery_worker_default_queue / celery_worker_beat_schedule"
            f" send tasks to {', '.join(map(str, unserved))}, which no worker instance consumes:"
            " those tasks would wait forever. Add the queue to celery_worker_queues or to an"
            " instance's queues in celery_worker_instances, or route the task to a served queue"
            f" (served: {', '.join(sorted(map(str, served)))})."
        )
    if len(beat_hosts) > 1:
        errors.append(
            f"celery_beat: the group has {len(beat_hosts)} hosts ({', '.join(beat_hosts)}), but"
            " exactly one beat process may run, or every periodic task runs once per beat host."
            " Keep one host in group celery_beat."
        )
    if schedule and not beat_hosts:
        errors.append(
            "celery_beat: celery_worker_beat_schedule defines periodic tasks"
            f" ({', '.join(schedule)}) but group celery_beat has no host, so nothing would send"
            " them. Put one host of celery_workers in group celery_beat, or empty the schedule."
        )
    outside = [h for h in beat_hosts if h not in workers]
    if outside:
        errors.append(
            f"celery_beat: {', '.join(outside)} must also be in group celery_workers: beat runs"
            " from the release and configuration the celery_worker role installs there."
        )
    return errors


def bundle_fleet_errors(
    fleet: Sequence[Mapping[str, Any]],
    groups: Mapping[str, Sequence[str]],
    play_hosts: Sequence[str],
) -> list[str]:
    """Filter: FLEET_FACTS | bundle_fleet_errors(groups, ansible_play_hosts_all)."""
    return fleet_errors(
        fleet,
        list(groups.get("celery_workers") or []),
        list(groups.get("celery_beat") or []),
        list(play_hosts),
    )


class FilterModule:
    """The bundle's validation filters."""

    def filters(self) -> dict[str, Any]:
        return {
            "bundle_type_errors": bundle_type_errors,
            "bundle_unknown_variables": bundle_unknown_variables,
            "bundle_fleet_errors": bundle_fleet_errors,
        }


__all__ = ["FilterModule", "fleet_errors", "role_options", "type_errors", "unknown_variables"]
