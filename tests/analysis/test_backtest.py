"""`gatekeeper policy backtest`: a rollout recorded through the API, replayed through a stricter policy."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from flask.testing import FlaskClient

from gatekeeper.cli import main
from gatekeeper.gate_cycle import evaluate_all
from gatekeeper.metric_sources import BuiltinSource
from gatekeeper.services import Services
from tests.support.gates import FAST_POLICY, merged

GATE = {"interval": "100ms", "window": "30s", "soak": "0s", "min_sessions": 4, "max_error_rate": 0.5,
        "max_p95_latency": "2s", "max_cost_per_session": 0.4, "failure_limit": 2}
LENIENT = merged(FAST_POLICY, {"name": "lenient", "agents": ["bot"], "gate": GATE,
                               "stages": {"canary": {"tiers": [50]}, "expansion": {"tiers": [100]}}})
STRICT = merged(LENIENT, {"name": "strict", "agents": [], "gate": {"max_error_rate": 0.05}})
COMPARING = merged(LENIENT, {"name": "comparing", "agents": [],
                             "gate": {"compare": {"error_rate": {"max_increase": 0.5}}}})
TWITCHY = merged(LENIENT, {"name": "twitchy", "agents": [], "kill_switch": {"min_calls": 5, "max_error_rate": 0.1}})


@pytest.fixture
def policy_changes() -> dict[str, Any]:
    return {}


@pytest.fixture
def policy_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "policies"
    folder.mkdir()
    (folder / "lenient.yaml").write_text(yaml.safe_dump(LENIENT, sort_keys=False))
    return folder


def ok(response: Any) -> Any:
    assert response.status_code < 300, response.get_json()
    return response.get_json()


def serve_traffic(client: FlaskClient, agent: dict[str, str], *, sessions: int, prefix: str) -> int:
    """Run sessions of four calls; every candidate session's first call fails. Return the candidate sessions."""
    candidates = 0
    for index in range(sessions):
        started = ok(client.post("/v1/sessions", json={"agent": "bot", "session_key": f"{prefix}-{index}"},
                                 headers=agent))
        candidate = started["arm"] == "candidate"
        candidates += candidate
        for call in range(4):
            decided = ok(client.post("/v1/decisions", json={"session_id": started["session_id"], "tool": "search_kb",
                                                            "cost": 0.01}, headers=agent))
            status = "error" if candidate and call == 0 else "ok"
            ok(client.post(f"/v1/decisions/{decided['decision_id']}/outcome",
                           json={"status": status, "latency_ms": 80.0}, headers=agent))
        ok(client.post(f"/v1/sessions/{started['session_id']}/end", json={"status": "ok"}, headers=agent))
    return candidates


def test_a_stricter_policy_would_have_rolled_back_earlier(client: FlaskClient, services: Services,
                                                          rm: dict[str, str], make_token: Any, db_url: str,
                                                          tmp_path: Path) -> None:
    agent = make_token("agent", agent="bot")
    ok(client.post("/v1/agents", json={"name": "bot", "policy": "lenient", "stable_version": "v1"}, headers=rm))
    ok(client.post("/v1/agents/bot/rollouts", json={"version": "v2"}, headers=rm))
    for _ in range(2):  # twin -> shadow -> canary 50%, by hand
        ok(client.post("/v1/agents/bot/promote", json={"reason": "to canary"}, headers=rm))
    assert serve_traffic(client, agent, sessions=24, prefix="a") >= 4
    time.sleep(0.35)  # a few of the strict policy's 100 ms intervals pass over the recorded traffic
    source = BuiltinSource(services.db)
    assert [o.transition for o in evaluate_all(services, source, now=time.time())] == ["promote"]  # lenient: 25% ok
    serve_traffic(client, agent, sessions=8, prefix="b")
    time.sleep(0.15)
    assert [o.transition for o in evaluate_all(services, source, now=time.time())] == ["promote"]  # completes

    strict = tmp_path / "strict.yaml"
    strict.write_text(yaml.safe_dump(STRICT, sort_keys=False))
    runner = CliRunner()
    result = runner.invoke(main, ["policy", "backtest", str(strict), "--agent", "bot", "--json", "--db", db_url])
    assert result.exit_code == 0, result.output
    replayed = json.loads(result.output)
    assert replayed["actual"][-1]["state"] == "completed"
    rollback = replayed["would"][-1]
    assert (rollback["action"], rollback["tier_label"]) == ("rollback", "canary 50%")
    assert "error_rate failed" in rollback["reason"] and "failure_limit 2" in rollback["reason"]
    real_promotion = [e for e in replayed["actual"] if e["action"] == "promote" and e["tier_label"] == "expansion 100%"]
    assert real_promotion and rollback["at"] < real_promotion[0]["at"]

    lenient = runner.invoke(main, ["policy", "backtest", str(Path(services.settings.policy_dir) / "lenient.yaml"),
                                   "--agent", "bot", "--db", db_url])
    assert lenient.exit_code == 0, lenient.output
    assert "would: promote at expansion 100%" in lenient.output  # the lenient policy agrees with what happened
    assert [e for e in lenient.output.splitlines() if " would " in e and "rollback" in e] == []
    text = runner.invoke(main, ["policy", "backtest", str(strict), "--agent", "bot", "--db", db_url]).output
    twitchy = tmp_path / "twitchy.yaml"
    twitchy.write_text(yaml.safe_dump(TWITCHY, sort_keys=False))
    tripped = json.loads(runner.invoke(main, ["policy", "backtest", str(twitchy), "--agent", "bot", "--json",
                                              "--db", db_url]).output)["would"][-1]
    assert (tripped["action"], tripped["tier_label"]) == ("kill", "canary 50%") and "kill switch" in tripped["reason"]
    assert tripped["at"] <= rollback["at"]  # the kill switch looks at the same calls, on its own limit
    comparing = tmp_path / "comparing.yaml"
    comparing.write_text(yaml.safe_dump(COMPARING, sort_keys=False))
    compared = json.loads(runner.invoke(main, ["policy", "backtest", str(comparing), "--agent", "bot", "--json",
                                               "--db", db_url]).output)["would"][-1]
    assert (compared["action"], compared["tier_label"]) == ("rollback", "canary 50%")
    assert "error_rate vs stable failed" in compared["reason"]  # 25% of calls against stable's none
    assert "would: rollback at canary 50%" in text and "actual: completed at expansion 100%" in text


def test_backtest_names_a_missing_agent_or_rollout(db_url: str, services: Services, tmp_path: Path) -> None:
    strict = tmp_path / "strict.yaml"
    strict.write_text(yaml.safe_dump(STRICT, sort_keys=False))
    result = CliRunner().invoke(main, ["policy", "backtest", str(strict), "--agent", "nobody", "--db", db_url])
    assert result.exit_code == 1 and "no agent named 'nobody'" in result.output
