"""Fixtures of the edge tests; they live in tests/support/edge.py with the helpers they share."""

from __future__ import annotations

from tests.support.edge import target  # noqa: F401 - fixtures
