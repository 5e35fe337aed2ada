#!/usr/bin/env python3
"""Build an offline-installable release of a Python app for the worker hosts.

The hosts cannot count on reaching PyPI, so the controller downloads every
locked dependency (checking the lock's hashes), builds the app's wheel, and
packs both with a host-side requirements file into one archive. The archive
is named by a hash of its inputs, so an unchanged app is never rebuilt and a
changed one always gets a new name.

Prints one JSON object: {"changed", "id", "version", "archive"}.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import tomllib
from dataclasses import dataclass
from pathlib import Path

LOCK_NAME = "requirements.lock"


@dataclass(frozen=True)
class Pin:
    """One locked requirement: `name==version`, its marker and hashes."""

    spec: str
    marker: str
    hashes: tuple[str, ...]


def parse_lock(text: str) -> list[Pin]:
    """Parse a pip-style lock (as written by `uv pip compile --generate-hashes`)."""
    pins: list[Pin] = []
    logical = text.replace("\\\n", " ")
    for raw in logical.splitlines():
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        words = line.split()
        hashes = tuple(w.removeprefix("--hash=") for w in words if w.startswith("--hash="))
        head = " ".join(w for w in words if not w.startswith("--hash="))
        spec, _, marker = head.partition(";")
        if "==" not in spec:
            raise ValueError(f"{LOCK_NAME}: not an exact pin: {spec.strip()!r}")
        pins.append(Pin(spec.strip(), marker.strip(), hashes))
    return pins


def release_inputs(app_dir: Path) -> list[Path]:
    """Files whose content defines a release: metadata, lock and sources."""
    files = [app_dir / "pyproject.toml", app_dir / LOCK_NAME]
    files += sorted(
        p
        for p in (app_dir / "src").rglob("*")
        if p.is_file()
        and not any(part == "__pycache__" or part.endswith(".egg-info") for part in p.parts)
    )
    return files


def release_id(app_dir: Path, name: str, version: str) -> str:
    digest = hashlib.sha256()
    for path in release_inputs(app_dir):
        digest.update(path.relative_to(app_dir).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return f"{name}-{version}-{digest.hexdigest()[:12]}"


def run_pip(args: list[str]) -> None:
    # Links to local wheel caches would bypass the lock's hashes.
    env = {k: v for k, v in os.environ.items() if k != "PIP_FIND_LINKS"}
    proc = subprocess.run(
        [sys.executable, "-m", "pip", *args], env=env, capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise SystemExit(f"pip {args[0]} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")


def build_app_wheel(app_dir: Path, wheels: Path, scratch: Path) -> None:
    """Build the app's wheel from a snapshot of its tree in scratch, never in the tree itself.

    pip builds a local project in place, so setuptools would write build/ and *.egg-info into
    the user's app/ and two deploys running at once would trip over each other's files
    ("[Errno 17] File exists: build/bdist...").
    """
    snapshot = scratch / "app-src"
    shutil.copytree(
        app_dir,
        snapshot,
        ignore=shutil.ignore_patterns("build", "dist", "*.egg-info", "__pycache__", ".*"),
    )
    run_pip(["wheel", "--no-deps", str(snapshot), "-w", str(wheels)])


def build(app_dir: Path, out_dir: Path, release: str, name: str, version: str) -> Path:
    pins = parse_lock((app_dir / LOCK_NAME).read_text())
    with tempfile.TemporaryDirectory(dir=out_dir) as tmp:
        root = Path(tmp) / release
        wheels = root / "wheels"
        wheels.mkdir(parents=True)
        # Every pin regardless of its marker: markers are judged on the host,
        # whose Python differs from the controller's (TESTBED: async-timeout).
        download = Path(tmp) / "download.txt"
        download.write_text(
            "".join(f"{p.spec} {' '.join('--hash=' + h for h in p.hashes)}\n" for p in pins)
        )
        run_pip(["wheel", "--no-deps", "--require-hashes", "-r", str(download), "-w", str(wheels)])
        build_app_wheel(app_dir, wheels, Path(tmp))
        host_lock = [f"{p.spec} ; {p.marker}" if p.marker else p.spec for p in pins]
        (root / "requirements.txt").write_text("\n".join([*host_lock, f"{name}=={version}", ""]))
        (root / "release.json").write_text(json.dumps({"id": release, "version": version}) + "\n")
        archive = out_dir / f"{release}.tar.gz"
        partial = Path(tmp) / archive.name
        with tarfile.open(partial, "w:gz") as tar:
            tar.add(root, arcname=release, filter=_normalise)
        partial.replace(archive)
    return archive


def _normalise(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    info.mtime = 0
    info.mode = 0o755 if info.isdir() else 0o644
    return info


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--app-dir", type=Path, required=True)
    parser.add_argument("--out-dir", type=Path, required=True)
    args = parser.parse_args(argv)
    app_dir: Path = args.app_dir.resolve()
    project = tomllib.loads((app_dir / "pyproject.toml").read_text())["project"]
    name, version = str(project["name"]), str(project["version"])
    release = release_id(app_dir, name, version)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    archive = args.out_dir.resolve() / f"{release}.tar.gz"
    changed = not archive.exists()
    if changed:
        archive = build(app_dir, args.out_dir.resolve(), release, name, version)
    print(
        json.dumps({"changed": changed, "id": release, "version": version, "archive": str(archive)})
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
