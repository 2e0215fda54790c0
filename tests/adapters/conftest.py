"""Fixtures of the adapter tests; they live in tests/support/adapters.py with the helpers they share."""

from __future__ import annotations

from tests.support.adapters import app_overrides, desk, release_manager, strict_release_manager  # noqa: F401 - fixtures
