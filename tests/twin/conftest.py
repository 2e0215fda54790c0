"""Fixtures of the twin tests: the hot path's runtime driver on a temporary policy folder, the dashboard's browser."""

from __future__ import annotations

from tests.support.dashboard import browser, live_server, page, users  # noqa: F401 - fixtures
from tests.support.runtime import app_overrides, policy_dir, runtime  # noqa: F401 - fixtures
