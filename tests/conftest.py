"""Paths shared by the bundle's own tests."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ROLES = sorted(p for p in (REPO / "roles").iterdir() if (p / "meta/argument_specs.yml").exists())
