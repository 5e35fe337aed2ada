#!/usr/bin/env python3
"""How long each stage of `make test` takes, recorded by the run itself and shown in README.md.

scripts/timings.py run STAGE -- COMMAND...   run COMMAND; record STAGE's wall time in
                                              build/timings.json; exit with COMMAND's code
scripts/timings.py publish                    copy build/timings.json (a whole run) to
                                              .ci/timings.json and rewrite README.md's table
scripts/timings.py --check                    exit 1 if README.md's table is not the one
                                              .ci/timings.json renders, or names other stages
                                              than `make test` runs
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
CURRENT = REPO / "build/timings.json"
PUBLISHED = REPO / ".ci/timings.json"
MARKER = re.compile(r"(<!-- test-timings:start -->\n).*?(<!-- test-timings:end -->)", re.DOTALL)
FIXED_STAGES = ["bootstrap", "lint", "test-app", "test-bundle"]
WHAT = {
    "bootstrap": "Debian packages, the tool virtualenv and the base image, when missing",
    "lint": "yamllint, ansible-lint, ruff, mypy",
    "test-app": "the runtime library's and the app's unit and integration tests",
    "test-bundle": "the bundle's own tests, on every core",
}


def stages() -> list[str]:
    """The stages `make test` runs, in order: one per Molecule scenario after the fixed ones."""
    scenarios = sorted(p.parent.name for p in (REPO / "molecule").glob("*/molecule.yml"))
    return FIXED_STAGES + [f"molecule {name}" for name in scenarios]


def run(stage: str, command: list[str]) -> int:
    began = time.monotonic()
    code = subprocess.call(command)
    data: dict[str, Any] = json.loads(CURRENT.read_text()) if CURRENT.exists() else {}
    if stage == stages()[0] or "stages" not in data:
        data = {"started": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"), "stages": {}}
    data["stages"][stage] = {"seconds": round(time.monotonic() - began), "exit": code}
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
    ).stdout.strip()
    data["commit"] = commit or "unknown"
    CURRENT.parent.mkdir(exist_ok=True)
    CURRENT.write_text(json.dumps(data, indent=2) + "\n")
    return code


def minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f}"


def render(data: dict[str, Any]) -> str:
    rows = ["| stage | what | minutes |", "| --- | --- | --- |"]
    total = 0
    for stage in stages():
        seconds = data["stages"][stage]["seconds"]
        total += seconds
        what = WHAT.get(stage, "create, converge, idempotence, check, verify, destroy")
        rows.append(f"| `{stage}` | {what} | {minutes(seconds)} |")
    rows.append(f"| **total** | | **{minutes(total)}** |")
    rows.append("")
    rows.append(
        f"Recorded by `make test` on a clean clone at commit {data['commit']} "
        f"({data['started']}), on the 2-core machine CI runs on; `.ci/timings.json` holds the run."
    )
    return "\n".join(rows) + "\n"


def check() -> list[str]:
    if not PUBLISHED.exists():
        return [".ci/timings.json is missing: run make test on a clean clone, then publish"]
    data = json.loads(PUBLISHED.read_text())
    problems = []
    if set(data["stages"]) != set(stages()):
        problems.append(
            f".ci/timings.json has stages {sorted(data['stages'])}, make test runs {stages()}:"
            " run make test on a clean clone, then scripts/timings.py publish"
        )
        return problems
    if failed := [s for s, v in data["stages"].items() if v["exit"] != 0]:
        problems.append(f".ci/timings.json records a run whose stages failed: {failed}")
    match = MARKER.search(README.read_text())
    if not match or README.read_text()[match.end(1) : match.start(2)] != render(data):
        problems.append("README.md's test timings are not .ci/timings.json's: run publish")
    return problems


def main(argv: list[str]) -> int:
    if argv and argv[0] == "run":
        if "--" not in argv or argv.index("--") != 2:
            print("usage: scripts/timings.py run STAGE -- COMMAND...", file=sys.stderr)
            return 2
        return run(argv[1], argv[3:])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("action", nargs="?", choices=["publish"])
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args(argv)
    if args.check:
        problems = check()
        for problem in problems:
            print(problem, file=sys.stderr)
        return 1 if problems else 0
    if args.action == "publish":
        data = json.loads(CURRENT.read_text())
        PUBLISHED.write_text(json.dumps(data, indent=2) + "\n")
        text = README.read_text()
        if not MARKER.search(text):
            print("README.md has no <!-- test-timings:start/end --> markers", file=sys.stderr)
            return 1
        README.write_text(MARKER.sub(lambda m: m.group(1) + render(data) + m.group(2), text))
        return 0
    parser.print_usage(sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
