"""The gate tests' fixtures (a fast policy in tmp_path, a real SQLite app), with `gate.compare` set."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.dashboard import users  # noqa: F401 - the dashboard's signed-in users
from tests.support.gates import app_overrides, policy_dir, postgres_services, services  # noqa: F401 - shared

COMPARE = {"error_rate": {"max_increase": 0.5}, "p95_latency": {"max_increase": 0.2}, "confidence": 0.95}


@pytest.fixture
def policy_changes() -> dict[str, Any]:
    return {"gate": {"interval": "1s", "window": "30s", "soak": "0s", "min_sessions": 3, "max_error_rate": 0.1,
                     "max_p95_latency": "2s", "max_cost_per_session": 0.4, "failure_limit": 2,
                     "on_metrics_error": "hold", "error_limit": 2, "compare": COMPARE}}
