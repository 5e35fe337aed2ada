"""The README documents every role variable, generated from the argument specs."""

from __future__ import annotations

import re
import subprocess
import sys

from conftest import REPO, ROLES


def section(readme: str, heading: str) -> str:
    """The text under a heading of README.md, up to the next heading of any level."""
    body = readme.split(f" {heading}\n", 1)[1]
    return re.split(r"\n#{1,6} ", body, maxsplit=1)[0]


def check_script(name: str) -> None:
    """scripts/NAME --check: it exits 0, or says what in README.md is out of date."""
    proc = subprocess.run(
        [sys.executable, str(REPO / "scripts" / name), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr


def test_readme_variable_tables_are_current() -> None:
    check_script("role_docs.py")


def test_readme_has_a_table_for_every_role() -> None:
    readme = (REPO / "README.md").read_text()
    for role in ROLES:
        assert f"<!-- role-variables:{role.name}:start -->" in readme, role.name


def test_readme_names_the_two_commands() -> None:
    readme = (REPO / "README.md").read_text()
    assert "make lab" in readme
    assert "make test" in readme
    assert "make test" in (REPO / ".ci/run").read_text()


def test_security_table_names_tests_that_exist() -> None:
    readme = (REPO / "README.md").read_text()
    table = section(readme, "Security checks")
    named = re.findall(r"`(test_\w+\.py)(?:::(test_\w+))?`", table)
    assert len(named) >= 15
    for module, test in named:
        source = (REPO / "molecule/secure/tests" / module).read_text()
        assert not test or f"def {test}(" in source, f"{module}::{test}"


def test_readme_says_why_each_pinned_tool_is_there() -> None:
    readme = (REPO / "README.md").read_text()
    table = section(readme, "Dependencies and why")
    listed = {cell.strip(" `") for row in table.splitlines() if row.startswith("| ")
              for cell in re.split(r"[,|]", row.split("|")[1])}  # fmt: skip
    pins = (REPO / "requirements/controller.in").read_text().splitlines()
    names = [re.split(r"[\[=]", line)[0] for line in pins if line and not line.startswith("#")]
    assert len(names) >= 10
    missing = [n for n in names if not any(cell.split()[:1] == [n] or cell.startswith(n + "[")
                                           for cell in listed if cell)]  # fmt: skip
    assert not missing, f"README's 'Dependencies and why' does not name: {missing}"


def test_readme_says_why_each_debian_package_is_there() -> None:
    readme = (REPO / "README.md").read_text()
    deps = section(readme, "Dependencies and why")
    said = deps.split("On this machine, from Debian", 1)[1].split("On the hosts", 1)[0]
    bootstrap = (REPO / "scripts/bootstrap.sh").read_text()
    packages = re.search(r"^packages=\(([^)]*)\)", bootstrap, re.M)
    assert packages, "scripts/bootstrap.sh no longer lists its packages as packages=(...)"
    names = packages.group(1).split()
    assert "iptables" in names
    missing = [n for n in names if not re.search(rf"(?<![\w-]){re.escape(n)}(?![\w-])", said)]
    assert not missing, f"README does not say why bootstrap installs: {missing}"


def test_readme_test_timings_are_the_recorded_runs() -> None:
    check_script("timings.py")
