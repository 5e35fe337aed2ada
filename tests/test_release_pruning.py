"""Which releases a deploy removes (roles/celery_worker/filter_plugins/celery_worker_releases.py):
the oldest beyond celery_worker_releases_kept, never the one installed nor the one it replaces."""

from __future__ import annotations

import sys

from conftest import REPO

sys.path.insert(0, str(REPO / "roles/celery_worker/filter_plugins"))
from celery_worker_releases import celery_worker_prunable  # the role's plugin, not installed

R = "/opt/app/releases"


def found(*names_oldest_first: str) -> dict[str, list[dict[str, object]]]:
    return {
        "files": [
            {"path": f"{R}/{name}", "mtime": 1000.0 + i}
            for i, name in enumerate(names_oldest_first)
        ]
    }


def test_keeps_the_newest_and_removes_the_rest_with_their_archives() -> None:
    assert celery_worker_prunable(found("a", "b", "c", "d"), 3, f"{R}/d", f"{R}/c") == [
        f"{R}/a",
        f"{R}/a.tar.gz",
    ]


def test_never_removes_the_release_a_rollback_goes_back_to() -> None:
    # b was replaced by this run; c and d failed their health check after it and are newer.
    removed = celery_worker_prunable(found("a", "b", "c", "d", "e"), 2, f"{R}/e", f"{R}/b")
    assert f"{R}/b" not in removed
    assert f"{R}/e" not in removed
    assert removed == [f"{R}/{n}{s}" for n in ("d", "c", "a") for s in ("", ".tar.gz")]


def test_the_installed_release_is_kept_before_it_is_unpacked() -> None:
    # Check mode does not unpack a new release: it is not among the found directories.
    assert celery_worker_prunable(found("a", "b"), 2, f"{R}/new", f"{R}/b") == [
        f"{R}/a",
        f"{R}/a.tar.gz",
    ]


def test_first_deploy_and_fewer_releases_than_kept_remove_nothing() -> None:
    assert celery_worker_prunable(found("a"), 2, f"{R}/a") == []
    assert celery_worker_prunable(found(), 3, f"{R}/a", "") == []


def test_a_run_that_keeps_its_release_counts_it_once() -> None:
    # After playbooks/rollback.yml: the host runs a, which this run installs again.
    assert celery_worker_prunable(found("a", "b", "c"), 3, f"{R}/a", f"{R}/a") == []
    assert celery_worker_prunable(found("a", "b", "c"), 2, f"{R}/a", f"{R}/a") == [
        f"{R}/b",
        f"{R}/b.tar.gz",
    ]
