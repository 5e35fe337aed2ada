"""Every inventory the repository ships passes the type and misspelt-name checks.

The checks (playbooks/filter_plugins/bundle_validate.py) refuse a variable named
like a role's that no role declares: an inventory's own helper variable with a
role's prefix must be declared by the role, so these must all come out clean.
Variables are read with ansible-inventory, so group and host files combine as
Ansible combines them; values still holding a template are typed only once
templated, which the bad-input tests' runs of deploy.yml cover.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from badinput import write_inventory
from conftest import REPO

sys.path.insert(0, str(REPO / "playbooks/filter_plugins"))
# Filter plugin files, not installed modules.
import bundle_formats
import bundle_validate

ROLES = bundle_validate.role_options()
SCENARIOS = sorted(p.parent for p in (REPO / "molecule").glob("*/molecule.yml"))


def molecule_inventory(scenario: Path, root: Path) -> list[Path]:
    """The inventory Molecule writes for a scenario: its platforms' groups, its linked vars."""
    config = yaml.safe_load((scenario / "molecule.yml").read_text())
    groups: dict[str, Any] = {}
    for platform in config["platforms"]:
        for group in platform.get("groups", []):
            groups.setdefault(group, {"hosts": {}})["hosts"][platform["name"]] = None
    root.mkdir()
    (root / "hosts.yml").write_text(yaml.safe_dump({"all": {"children": groups}}))
    links = config["provisioner"].get("inventory", {}).get("links", {})
    for name, target in links.items():
        (root / name).symlink_to((scenario / target).resolve())
    # The cluster scenario's scale-out test adds a host from a second inventory file.
    return [root / "hosts.yml", *sorted((scenario / "inventory").glob("*.yml"))]


def inventories(tmp: Path) -> dict[str, list[Path]]:
    shipped = {
        "inventories/lab": [REPO / "inventories/lab"],
        "inventories/production": [REPO / "inventories/production"],
        "chaos/inventory": [REPO / "chaos/inventory"],
        "bench/inventory": [REPO / "bench/inventory"],
        "tests/badinput.py": [write_inventory(tmp / "badinput", {}, {}, 0)],
    }
    for scenario in SCENARIOS:
        name = f"molecule/{scenario.name}"
        shipped[name] = molecule_inventory(scenario, tmp / scenario.name)
    return shipped


def host_vars(sources: list[Path]) -> dict[str, dict[str, Any]]:
    args = [arg for source in sources for arg in ("-i", str(source))]
    env = {**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg")}
    proc = subprocess.run(
        ["ansible-inventory", *args, "--list"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    listing = json.loads(proc.stdout)
    return dict(listing["_meta"]["hostvars"])


def templated(value: object) -> bool:
    return isinstance(value, str) and ("{{" in value or "{%" in value)


def test_every_inventory_is_listed() -> None:
    # A new inventory directory (one holding group_vars) must be added above.
    found = {
        str(p.parent.relative_to(REPO))
        for p in REPO.glob("**/group_vars")
        if ".venv" not in p.parts and "molecule" not in p.parts
    }
    assert found == {
        "inventories/lab",
        "inventories/production",
        "chaos/inventory",
        "bench/inventory",
    }


@pytest.fixture(scope="module")
def listed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, dict[str, Any]]]:
    tmp = tmp_path_factory.mktemp("inventories")
    return {name: host_vars(sources) for name, sources in inventories(tmp).items()}


def test_the_molecule_scenarios_are_read(listed: dict[str, dict[str, dict[str, Any]]]) -> None:
    assert {f"molecule/{s.name}" for s in SCENARIOS} <= set(listed)
    cluster = listed["molecule/cluster"]
    assert cluster["mol-cluster-worker3"]["celery_worker_instances"][0]["name"] == "io"
    assert listed["molecule/secure"]["mol-secure-redis1"]["redis_auth_mode"] == "acl"


Listed = dict[str, dict[str, dict[str, Any]]]


def failing(
    listed: Listed, check: Callable[[dict[str, Any]], list[str]], *, values: bool = True
) -> dict[str, list[str]]:
    """Each inventory host whose variables the check refuses, with its messages. A check of
    values sees no value still holding a template: the play templates it, this listing not."""
    return {
        f"{name} {host}": errors
        for name, hosts in listed.items()
        for host, variables in hosts.items()
        if (errors := check({k: v for k, v in variables.items() if not (values and templated(v))}))
    }


def test_no_inventory_names_an_undeclared_role_variable(listed: Listed) -> None:
    names = failing(listed, lambda v: bundle_validate.unknown_variables(v, ROLES), values=False)
    assert names == {}


def test_no_inventory_sets_a_role_variable_of_the_wrong_type(listed: Listed) -> None:
    assert failing(listed, lambda v: bundle_validate.type_errors(v, ROLES)) == {}


def test_no_inventory_sets_a_value_of_the_wrong_form(listed: Listed) -> None:
    assert failing(listed, bundle_formats.format_errors) == {}


def test_the_checks_see_the_inventories_values(
    listed: dict[str, dict[str, dict[str, Any]]],
) -> None:
    # Not vacuous: the production inventory's typed values are read and checked.
    workers = listed["inventories/production"]["worker2.example.internal"]
    assert isinstance(workers["celery_worker_instances"], list)
    plain = {k: v for k, v in workers.items() if not templated(v)}
    bad = plain | {"celery_worker_time_limit": "330", "celery_worker_time_limt": 330}
    assert [e.split(" ")[0] for e in bundle_validate.type_errors(bad, ROLES)] == [
        "celery_worker_time_limit"
    ]
    assert [e.split(" ")[0] for e in bundle_validate.unknown_variables(bad, ROLES)] == [
        "celery_worker_time_limt"
    ]
