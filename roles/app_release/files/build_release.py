#!/usr/bin/env python3
"""Build an offline-installable release of a Python app for the worker hosts.

The hosts cannot count on reaching PyPI, so the controller downloads every
locked dependency (checking the lock's hashes), builds the app's wheel, and
packs both with a host-side requirements file into one archive. The archive
is named by a hash of its inputs, so an unchanged app is never rebuilt and a
changed one always gets a new name.

The app depends on rcbundle, the bundle's runtime library (runtime/ in this
repository), pinned in its lock with the hash of the wheel this bundle builds.
`build_release.py lock --app-dir DIR` writes such a lock (what `make lock` runs).

Prints one JSON object: {"changed", "id", "name", "version", "archive", "app",
"task_routes"}; app and task_routes come from the app's [tool.rcbundle] table.
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
RUNTIME = "rcbundle"
LOCK_COMMAND = "make lock APP={app_dir}"


class ReleaseError(Exception):
    """Something the user fixes in the app directory; the message says what."""


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
            raise ReleaseError(f"{LOCK_NAME}: not an exact pin: {spec.strip()!r}")
        if not hashes:
            raise ReleaseError(
                f"{LOCK_NAME}: {spec.strip()} has no --hash: the hosts install with "
                "--require-hashes, so every pin needs its hashes"
            )
        pins.append(Pin(spec.strip(), marker.strip(), hashes))
    return pins


def pin_name(pin: Pin) -> str:
    return pin.spec.split("==", 1)[0].strip().lower().replace("_", "-")


@dataclass(frozen=True)
class AppMeta:
    """What the bundle reads from the app's pyproject.toml."""

    name: str
    version: str
    app: str
    task_routes: dict[str, str]


def read_app_meta(app_dir: Path) -> AppMeta:
    pyproject = app_dir / "pyproject.toml"
    if not pyproject.is_file():
        raise ReleaseError(f"{pyproject}: not found; the app directory needs a pyproject.toml")
    data = tomllib.loads(pyproject.read_text())
    project = data.get("project", {})
    table = data.get("tool", {}).get("rcbundle", {})
    app = table.get("app")
    if not isinstance(app, str) or ":" not in app:
        raise ReleaseError(
            f"{pyproject}: [tool.rcbundle] app must name the Celery application the workers "
            'load, as MODULE:ATTRIBUTE (for example app = "proj.celery:app")'
        )
    routes = table.get("task_routes", {})
    if not isinstance(routes, dict) or not all(
        isinstance(k, str) and isinstance(v, str) and v for k, v in routes.items()
    ):
        raise ReleaseError(
            f"{pyproject}: [tool.rcbundle.task_routes] must map task names to queue names"
        )
    return AppMeta(str(project["name"]), str(project["version"]), app, dict(routes))


def check_lock(app_dir: Path, pins: list[Pin]) -> Pin:
    """The lock's rcbundle pin; ReleaseError when the lock cannot be installed as locked."""
    found = [pin for pin in pins if pin_name(pin) == RUNTIME]
    if not found:
        raise ReleaseError(
            f"{app_dir / LOCK_NAME}: no {RUNTIME} pin. Add {RUNTIME} to the app's dependencies "
            f"and run `{LOCK_COMMAND.format(app_dir=app_dir)}`"
        )
    return found[0]


def build_runtime_wheel(runtime_dir: Path, out: Path) -> Path:
    """The runtime's wheel, byte-identical on every machine (hatchling), so its hash is stable."""
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob(f"{RUNTIME}-*.whl"):
        old.unlink()
    # ./ so that pip reads a directory, never a package of that name on an index.
    run_pip(["wheel", "--no-deps", "--quiet", f"{runtime_dir}/", "-w", str(out)])
    (wheel,) = out.glob(f"{RUNTIME}-*.whl")
    return wheel


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def check_runtime_pin(app_dir: Path, pin: Pin, wheel: Path) -> None:
    digest = f"sha256:{sha256(wheel)}"
    version = wheel.name.split("-")[1]
    if pin.spec.split("==", 1)[1].strip() != version or digest not in pin.hashes:
        raise ReleaseError(
            f"{app_dir / LOCK_NAME}: pins {pin.spec} with hashes that are not those of this "
            f"bundle's {RUNTIME} {version} ({digest}); run "
            f"`{LOCK_COMMAND.format(app_dir=app_dir)}` to lock the bundle's runtime"
        )


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


def build(
    app_dir: Path, out_dir: Path, release: str, meta: AppMeta, pins: list[Pin], runtime: Path
) -> Path:
    name, version = meta.name, meta.version
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
        run_pip(
            [
                *("wheel", "--no-deps", "--require-hashes", "-r", str(download)),
                *("-w", str(wheels), "--find-links", str(runtime.parent)),
            ]
        )
        build_app_wheel(app_dir, wheels, Path(tmp))
        host_lock = [f"{p.spec} ; {p.marker}" if p.marker else p.spec for p in pins]
        (root / "requirements.txt").write_text("\n".join([*host_lock, f"{name}=={version}", ""]))
        (root / "release.json").write_text(
            json.dumps({"id": release, "version": version, "app": meta.app}) + "\n"
        )
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


def lock(app_dir: Path, runtime_dir: Path, build_dir: Path) -> None:
    """Write app_dir's hashed, universal lock, with the bundle's runtime pinned by its hash."""
    wheel = build_runtime_wheel(runtime_dir, build_dir / "runtime")
    subprocess.run(
        [
            *("uv", "pip", "compile", "pyproject.toml", "--universal", "--python-version", "3.11"),
            *("--generate-hashes", "--quiet", "--find-links", str(wheel.parent), "-o", LOCK_NAME),
            # The wheel keeps its name across runtime changes: never reuse a cached hash.
            *("--refresh-package", RUNTIME, "--upgrade-package", RUNTIME),
        ],
        cwd=app_dir,
        check=True,
    )
    check_runtime_pin(
        app_dir, check_lock(app_dir, parse_lock((app_dir / LOCK_NAME).read_text())), wheel
    )
    print(f"{app_dir / LOCK_NAME}: locked, with {wheel.name}")


def release(app_dir: Path, runtime_dir: Path, out_dir: Path) -> dict[str, object]:
    meta = read_app_meta(app_dir)
    lock_file = app_dir / LOCK_NAME
    if not lock_file.is_file():
        raise ReleaseError(
            f"{lock_file}: not found; run `{LOCK_COMMAND.format(app_dir=app_dir)}` to write it"
        )
    pins = parse_lock(lock_file.read_text())
    runtime_pin = check_lock(app_dir, pins)
    release_name = release_id(app_dir, meta.name, meta.version)
    out_dir.mkdir(parents=True, exist_ok=True)
    archive = out_dir / f"{release_name}.tar.gz"
    changed = not archive.exists()
    if changed:
        # A directory of its own: several deploys may build at once (the bad-input tests do).
        with tempfile.TemporaryDirectory(dir=out_dir) as scratch:
            wheel = build_runtime_wheel(runtime_dir, Path(scratch))
            check_runtime_pin(app_dir, runtime_pin, wheel)
            archive = build(app_dir, out_dir, release_name, meta, pins, wheel)
    return {
        "changed": changed,
        "id": release_name,
        "name": meta.name,
        "version": meta.version,
        "archive": str(archive),
        "app": meta.app,
        "task_routes": meta.task_routes,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", nargs="?", choices=["release", "lock"], default="release")
    parser.add_argument("--app-dir", type=Path, required=True)
    parser.add_argument("--runtime-dir", type=Path, required=True)
    parser.add_argument("--out-dir", type=Path, required=True)
    args = parser.parse_args(argv)
    app_dir: Path = args.app_dir.resolve()
    try:
        if args.command == "lock":
            lock(app_dir, args.runtime_dir.resolve(), args.out_dir.resolve())
        else:
            print(json.dumps(release(app_dir, args.runtime_dir.resolve(), args.out_dir.resolve())))
    except ReleaseError as exc:
        print(f"build_release: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
