"""What the two living-twin tests on real processes share: the policy, and reading the agent as a release manager.

tests/twin/test_living_twin.py drives the agent through the SDK over the HTTP API;
tests/twin/test_living_twin_gateway.py drives it through the MCP gateway. Both tell one story on the
same policy: a live stable session becomes a scenario, the stable twin run is faithful, the twin drifts
and the rollout holds in twin with `twin_unfaithful`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import requests

from tests.support.processes import Deployment

POLICY = """\
name: twinpol
agents: [twinbot]
tools: {lookup_customer: read_only, refund_payment: irreversible, send_email: irreversible,
        update_ticket: reversible}
stages:
  twin:
    gate: {min_runs: 3, min_pass_rate: 0.5, max_twin_age: 1h, min_fidelity: 0.9, min_replays: 1}
    scenario_files: [twinpol.scenarios.yaml]
    differences: ["payments go to a fake processor"]
  canary:
    tiers: [50]
    caps: {tool_calls_per_session: 10, spend_per_session: 1.00}
    approval_required: []
  expansion:
    tiers: [100]
    caps: {tool_calls_per_session: 10, spend_per_session: 1.00}
stable_caps: {tool_calls_per_session: 10, spend_per_session: 1.00}
gate: {interval: 1s, window: 1m, soak: 1s, min_sessions: 4}
"""
DEADLINE_S = 60.0


def agent_status(deployment: Deployment, rm: str) -> dict[str, Any]:
    """Return `GET /v1/agents/twinbot` as the release manager reads it."""
    answer = requests.get(f"{deployment.url}/v1/agents/twinbot", headers={"Authorization": f"Bearer {rm}"},
                          timeout=10)
    assert answer.status_code == 200, answer.text
    found: dict[str, Any] = answer.json()
    return found


def wait_for(deployment: Deployment, rm: str, want: Callable[[dict[str, Any]], Any]) -> dict[str, Any]:
    """Poll the agent until `want` holds (at most DEADLINE_S); return what it read last."""
    deadline = time.monotonic() + DEADLINE_S
    found: dict[str, Any] = {}
    while time.monotonic() < deadline:
        found = agent_status(deployment, rm)
        if want(found):
            return found
        time.sleep(0.3)
    raise AssertionError(f"the rollout never got there: {json.dumps(found)[:3000]}")
