"""Fixtures of the gateway tests; they live in tests/support/gateway_world.py with the helpers they share."""

from __future__ import annotations

from tests.support.gateway_world import world  # noqa: F401 - fixtures
