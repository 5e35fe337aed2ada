"""Every role variable is declared once, with the same default as defaults/main.yml."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import ROLES


def load(path: Path) -> dict[str, Any]:
    return dict(yaml.safe_load(path.read_text()) or {})


def spec(role: Path, entry: str = "main") -> dict[str, Any]:
    return dict(load(role / "meta/argument_specs.yml")["argument_specs"][entry]["options"])


@pytest.mark.parametrize("role", ROLES, ids=lambda r: r.name)
def test_defaults_and_spec_declare_the_same_variables(role: Path) -> None:
    defaults = load(role / "defaults/main.yml")
    options = spec(role)
    with_default = {name for name, opt in options.items() if not opt.get("required")}
    assert set(defaults) == with_default


@pytest.mark.parametrize("role", ROLES, ids=lambda r: r.name)
def test_defaults_match_the_spec(role: Path) -> None:
    defaults = load(role / "defaults/main.yml")
    for name, opt in spec(role).items():
        if name in defaults:
            assert opt.get("default") == defaults[name], name


@pytest.mark.parametrize("role", ROLES, ids=lambda r: r.name)
def test_every_option_is_typed_described_and_prefixed(role: Path) -> None:
    for name, opt in spec(role).items():
        assert name.startswith(f"{role.name}_"), name
        assert opt.get("type"), f"{name} has no type"
        assert opt.get("description"), f"{name} has no description"
        if opt.get("required"):
            assert "default" not in opt, f"{name} is required and has a default"


@pytest.mark.parametrize("role", ROLES, ids=lambda r: r.name)
def test_validate_entry_point_checks_the_same_variables(role: Path) -> None:
    specs = load(role / "meta/argument_specs.yml")["argument_specs"]
    if (role / "tasks/validate.yml").exists():
        assert spec(role, "validate") == spec(role)
    else:
        assert "validate" not in specs
