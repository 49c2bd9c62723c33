"""Shared fixtures. The pipeline fixtures live in tests/fixtures.py (a plugin)."""

pytest_plugins = ["tests.fixtures"]
