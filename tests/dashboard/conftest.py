"""Fixtures of the dashboard tests; they live in tests/support/dashboard.py with the helpers they share."""

from __future__ import annotations

from tests.support.dashboard import browser, live_server, page, users  # noqa: F401 - fixtures
