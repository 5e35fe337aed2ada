"""Paths shared by the bundle's own tests."""

from __future__ import annotations

import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# The fault-injection (chaos/) and benchmark (bench/) harnesses are top-level packages of the
# repository, imported from its root, not installed.
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
# Every playbook these tests run targets this machine over the local connection, where mitogen's
# strategy (the bundle's default, which the Molecule scenarios use) gains nothing and costs about
# 1.4 s of a 5 s validation run; Ansible's own linear strategy runs the same tasks.
os.environ.setdefault("ANSIBLE_STRATEGY", "linear")
ROLES = sorted(p for p in (REPO / "roles").iterdir() if (p / "meta/argument_specs.yml").exists())
