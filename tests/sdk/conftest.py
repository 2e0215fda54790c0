"""Fixtures of the SDK tests; they live in tests/support/sdk.py and tests/support/runtime.py with their helpers."""

from __future__ import annotations

from tests.support.runtime import app_overrides, policy_dir, runtime, served  # noqa: F401 - fixtures
from tests.support.sdk import gk, token  # noqa: F401 - fixtures
