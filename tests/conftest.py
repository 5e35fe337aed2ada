"""Paths shared by the bundle's own tests."""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# The fault-injection harness (chaos/) is a top-level package of the repository, not installed.
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
ROLES = sorted(p for p in (REPO / "roles").iterdir() if (p / "meta/argument_specs.yml").exists())

# The benchmark harness (bench/) is imported as a package from the repository root.
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
