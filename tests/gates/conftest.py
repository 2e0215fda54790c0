"""Fixtures of the gates tests; they live in tests/support/gates.py with the helpers they share."""

from __future__ import annotations

from tests.support.gates import app_overrides, policy_changes, policy_dir, postgres_services, services  # noqa: F401 - fixtures
