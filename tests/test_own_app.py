"""Bring your own app: what the README's section promises, from the user's side.

The app is tests/apps/textstats (not the bundle's: another package, other task names, a
third-party dependency). Its deploy with inventory variables only is the default Molecule
scenario; here, without a lab: that the roles and playbooks name no app, that the app's own
declarations reach the release, and that a lock the hosts could not install as locked stops
the run in the build play, before any host changes, with what to do.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from badinput import assert_refused, run_validation, write_inventory
from conftest import REPO

sys.path.insert(0, str(REPO / "roles/app_release/files"))
import build_release  # the role's file, not an installed module

OWN_APP = REPO / "tests/apps/textstats"


def test_roles_and_playbooks_name_no_app() -> None:
    found = subprocess.run(
        ["grep", "-rn", "taskapp", "roles", "playbooks", "deploy.yml"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert found.stdout == "", found.stdout


def test_the_apps_pyproject_names_its_celery_app_and_routes() -> None:
    meta = build_release.read_app_meta(OWN_APP)
    assert (meta.name, meta.app) == ("textstats", "textstats.worker:celery_app")
    assert meta.task_routes == {"textstats.tasks.slug": "text"}


def test_the_apps_module_names_nothing_of_the_bundles() -> None:
    source = "\n".join(p.read_text() for p in (OWN_APP / "src").rglob("*.py"))
    assert not re.search(r"rcbundle|taskapp", source)


def _copy(tmp_path: Path) -> Path:
    app = tmp_path / "myapp"
    shutil.copytree(OWN_APP, app, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    return app


def _deploy_with(tmp_path: Path, app: Path) -> subprocess.CompletedProcess[str]:
    inventory = write_inventory(tmp_path / "inventory", {}, {}, 0)
    return run_validation(inventory, "-e", f"app_release_source_dir={app}")


def _refused_in_the_build(proc: subprocess.CompletedProcess[str], expected: list[str]) -> None:
    assert_refused(proc, ["Stop when the app cannot be released", *expected])
    # The build is the first play: nothing ran on any host before it stopped.
    assert "Validate" not in proc.stdout.split("Stop when the app cannot be released")[0]


def test_a_missing_lock_stops_the_run_with_the_command_that_writes_it(tmp_path: Path) -> None:
    app = _copy(tmp_path)
    (app / "requirements.lock").unlink()
    proc = _deploy_with(tmp_path, app)
    _refused_in_the_build(proc, ["requirements.lock: not found", f"make lock APP={app}"])


def test_an_unhashed_pin_stops_the_run(tmp_path: Path) -> None:
    app = _copy(tmp_path)
    lock = app / "requirements.lock"
    text = lock.read_text()
    # python-slugify as `pip freeze` would write it: no hashes.
    start = text.index("python-slugify==")
    end = text.index("\n", text.index("# via", start))
    lock.write_text(text[:start] + "python-slugify==8.0.4\n" + text[end + 1 :])
    proc = _deploy_with(tmp_path, app)
    _refused_in_the_build(proc, ["python-slugify==8.0.4 has no --hash", "--require-hashes"])


def test_a_lock_without_the_runtime_stops_the_run(tmp_path: Path) -> None:
    app = _copy(tmp_path)
    lock = app / "requirements.lock"
    text = lock.read_text()
    start = text.index("rcbundle==")
    end = text.index("\n", text.index("# via", start))
    lock.write_text(text[:start] + text[end + 1 :])
    proc = _deploy_with(tmp_path, app)
    _refused_in_the_build(proc, ["no rcbundle pin", "Add rcbundle to the app's dependencies"])


def test_a_pyproject_without_the_app_stops_the_run(tmp_path: Path) -> None:
    app = _copy(tmp_path)
    pyproject = app / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace('app = "textstats.worker:celery_app"', ""))
    proc = _deploy_with(tmp_path, app)
    _refused_in_the_build(proc, ["[tool.rcbundle] app must name the Celery application"])


@pytest.mark.parametrize("lock", [OWN_APP / "requirements.lock", REPO / "app/requirements.lock"])
def test_the_shipped_locks_pin_this_bundles_runtime(tmp_path: Path, lock: Path) -> None:
    # Fails when runtime/ changed without `make lock` (and `make lock APP=tests/apps/textstats`).
    wheel = build_release.build_runtime_wheel(REPO / "runtime", tmp_path)
    pin = build_release.check_lock(lock.parent, build_release.parse_lock(lock.read_text()))
    build_release.check_runtime_pin(lock.parent, pin, wheel)


def test_a_stale_runtime_pin_names_the_fix(tmp_path: Path) -> None:
    wheel = build_release.build_runtime_wheel(REPO / "runtime", tmp_path)
    stale = build_release.Pin("rcbundle==1.1.0", "", ("sha256:" + "0" * 64,))
    with pytest.raises(build_release.ReleaseError, match=r"make lock APP=.*to lock the bundle"):
        build_release.check_runtime_pin(OWN_APP, stale, wheel)
