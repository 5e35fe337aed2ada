"""Which installed releases a deploy removes (tasks/install.yml): all but the
celery_worker_releases_kept newest, and never the two a rollback needs, the release this run
installs and the one it replaces (playbooks/rollback.yml goes back to that one)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def celery_worker_prunable(
    found: Mapping[str, Any], keep: int, current: str, replaced: str = ""
) -> list[str]:
    """The release directories of a find result to remove, each with its archive (DIR.tar.gz).

    found: the find over the releases directory; keep: celery_worker_releases_kept (at least 2,
    the validate step says); current: the release this run installs; replaced: the release the
    host ran before this run ('' on a first deploy).
    """
    newest_first = [
        f["path"]
        for f in sorted(found.get("files", []), key=lambda f: f.get("mtime", 0), reverse=True)
    ]
    # A run that keeps its release replaces none: the same path, counted once.
    kept = list(dict.fromkeys(path for path in (current, replaced) if path))
    for path in newest_first:
        if len(kept) >= keep:
            break
        if path not in kept:
            kept.append(path)
    return [
        f"{path}{suffix}" for path in newest_first if path not in kept for suffix in ("", ".tar.gz")
    ]


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"celery_worker_prunable": celery_worker_prunable}
