"""The controller's release build (roles/app_release/files/build_release.py)."""

from __future__ import annotations

import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from conftest import REPO

sys.path.insert(0, str(REPO / "roles/app_release/files"))
import build_release  # the role's file, not an installed module


def _tiny_app(root: Path) -> Path:
    app = root / "app"
    (app / "src/tiny").mkdir(parents=True)
    (app / "src/tiny/__init__.py").write_text("VALUE = 1\n")
    (app / "README.md").write_text("tiny\n")
    (app / "pyproject.toml").write_text(
        textwrap.dedent(
            """\
            [build-system]
            requires = ["setuptools>=68"]
            build-backend = "setuptools.build_meta"

            [project]
            name = "tiny"
            version = "1.0"
            readme = "README.md"

            [tool.setuptools.packages.find]
            where = ["src"]
            """
        )
    )
    return app


def test_app_wheels_build_side_by_side_and_leave_the_app_tree_alone(tmp_path: Path) -> None:
    # The bad-input tests run several deploys at once, each building the same app/.
    app = _tiny_app(tmp_path)
    before = sorted(p.relative_to(app) for p in app.rglob("*"))

    def build(i: int) -> list[str]:
        scratch = tmp_path / f"scratch{i}"
        wheels = scratch / "wheels"
        wheels.mkdir(parents=True)
        build_release.build_app_wheel(app, wheels, scratch)
        return [w.name for w in wheels.iterdir()]

    with ThreadPoolExecutor(3) as pool:
        built = list(pool.map(build, range(3)))
    assert built == [["tiny-1.0-py3-none-any.whl"]] * 3
    assert sorted(p.relative_to(app) for p in app.rglob("*")) == before
