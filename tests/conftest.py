"""Paths shared by the bundle's own tests."""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# The fault-injection (chaos/) and benchmark (bench/) harnesses are top-level packages of the
# repository, imported from its root, not installed.
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
ROLES = sorted(p for p in (REPO / "roles").iterdir() if (p / "meta/argument_specs.yml").exists())
