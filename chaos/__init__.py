"""Fault-injection suite for the bundle: `make chaos` (see RELIABILITY.md)."""
