"""Fixtures of the chaos tests; they live in tests/support/runtime.py with the helpers they share."""

from __future__ import annotations

from tests.support.runtime import app_overrides, policy_dir, runtime, served  # noqa: F401 - fixtures
