#!/usr/bin/env python3
"""Write each role's variable table into README.md from its argument spec.

scripts/role_docs.py          rewrite the tables between the markers
scripts/role_docs.py --check  exit 1 if README.md is out of date
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
MARKER = re.compile(
    r"(<!-- role-variables:(?P<role>[a-z_]+):start -->\n)"
    r".*?(<!-- role-variables:(?P=role):end -->)",
    re.DOTALL,
)


def cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def describe(opt: dict[str, Any]) -> str:
    text = " ".join(opt.get("description") or [])
    if isinstance(opt.get("description"), str):
        text = opt["description"]
    text = re.sub(r"C\(([^)]*)\)", r"`\1`", text)
    if opt.get("choices"):
        text += " One of: " + ", ".join(f"`{c}`" for c in opt["choices"]) + "."
    return cell(text)


def table(role: str) -> str:
    spec = yaml.safe_load((REPO / "roles" / role / "meta/argument_specs.yml").read_text())
    options: dict[str, Any] = spec["argument_specs"]["main"]["options"]
    rows = ["| Variable | Type | Default | Description |", "| --- | --- | --- | --- |"]
    for name, opt in options.items():
        kind = opt["type"] + (f" of {opt['elements']}" if opt.get("elements") else "")
        default = "**required**" if opt.get("required") else f"`{json.dumps(opt.get('default'))}`"
        rows.append(f"| `{name}` | {kind} | {cell(default)} | {describe(opt)} |")
    return "\n".join(rows) + "\n"


FORMATS_MARKER = re.compile(
    r"(<!-- value-formats:start -->\n).*?(<!-- value-formats:end -->)", re.DOTALL
)


def formats_table() -> str:
    """The validate play's format rules (playbooks/filter_plugins/bundle_formats.py)."""
    sys.path.insert(0, str(REPO / "playbooks/filter_plugins"))
    import bundle_formats

    rows = ["| Variable | May hold | Because |", "| --- | --- | --- |"]
    for name, rule in bundle_formats.FORMATS.items():
        rows.append(f"| `{name}` | {cell(rule.may_hold)} | {cell(rule.because)} |")
    return "\n".join(rows) + "\n"


def render(text: str) -> str:
    text = MARKER.sub(lambda m: m.group(1) + table(m.group("role")) + m.group(3), text)
    return FORMATS_MARKER.sub(lambda m: m.group(1) + formats_table() + m.group(2), text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()
    current = README.read_text()
    wanted = render(current)
    if args.check:
        if current != wanted:
            print(
                "README.md's variable tables are stale: run scripts/role_docs.py", file=sys.stderr
            )
            return 1
        return 0
    README.write_text(wanted)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
