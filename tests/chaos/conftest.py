"""Fixtures of the chaos tests: the hotpath test policy with rehearsed failures, and the runtime driver."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.runtime import POLICY, app_overrides, runtime, served  # noqa: F401 - fixtures
from tests.support.sdk import token  # noqa: F401 - fixtures

CHAOS = """    chaos:
      search_kb: {error_rate: 0.3, timeout_rate: 0.2, partial_rate: 0.1, malformed_rate: 0.1, latency: 40ms,
                  latency_rate: 0.5}
      irreversible: {timeout_rate: 1}
"""


@pytest.fixture
def policy_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "policies"
    folder.mkdir()
    text = POLICY.replace("  shadow: {traffic_percent", CHAOS + "  shadow: {traffic_percent")
    text = text.replace("forbid: [update_ticket]}", "forbid: [update_ticket], max_retries: {lookup_customer: 1}}")
    (folder / "hotpath.yaml").write_text(text)
    return folder
