"""Fixtures of the session listing and trace verdict tests: the hot-path policy, runtime driver and browser."""

from __future__ import annotations

from tests.support.dashboard import browser, live_server, page, users  # noqa: F401 - fixtures
from tests.support.runtime import app_overrides, policy_dir, runtime  # noqa: F401 - fixtures
