"""From an empty database to a completed rollout with the command line only, on real processes.

`gatekeeper serve` (2 workers) and `gatekeeper scheduler` run as a release manager runs them; every
step a person takes is a `gatekeeper` command in a subprocess; the agent's traffic goes through the
SDK (twin scenario runs, live sessions and their shadow mirrors, one call that waits for approval).
The policy is the test's own, with second-long soaks so that the gates move the rollout in seconds.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from gatekeeper.client import Gatekeeper, Session
from tests.support.processes import Deployment

POLICY = """\
name: quick
agents: [my-agent]
tools:
  search_docs: read_only
  draft_reply: reversible
  send_reply: irreversible
stages:
  twin:
    gate: {min_runs: 4, min_pass_rate: 0.9, max_twin_age: 1h}
    scenarios:
      answer-question: {expect: [search_docs, draft_reply]}
  shadow:
    gate: {min_sessions: 4, soak: 2s, max_error_rate: 0.1, max_violation_rate: 0.2, min_agreement: 0.8}
  canary:
    tiers: [50]
    caps: {tool_calls_per_session: 10, spend_per_session: 0.20}
    approval_required: [irreversible]
  expansion:
    tiers: [100]
    caps: {tool_calls_per_session: 10, spend_per_session: 0.20}
stable_caps: {tool_calls_per_session: 10, spend_per_session: 0.20}
gate: {interval: 1s, window: 1m, soak: 3s, min_sessions: 4, max_error_rate: 0.1, max_p95_latency: 2s,
       max_cost_per_session: 0.10}
"""
DEADLINE_S = 150.0


def run_flow(session: Session, tools: tuple[str, ...] = ("search_docs", "draft_reply")) -> None:
    for tool in tools:
        decision = session.decide(tool, 0.002)
        if decision.verdict == "allow":
            session.report(decision, "ok", actual_cost=0.002, latency_ms=80.0)
    session.end("ok", passed=True if session.environment == "twin" else None)


def status(deployment: Deployment, rm: str) -> dict[str, Any]:
    found: dict[str, Any] = json.loads(deployment.cli("status", "my-agent", "--json", token=rm).stdout)
    return found


def ask_and_approve(deployment: Deployment, rm: str, session: Session) -> str:
    """Ask for an irreversible call, approve it with the CLI, and make it; return the approval id."""
    decision = session.decide("send_reply", 0.01, preview="reply to the customer")
    assert decision.verdict == "approval_required" and decision.approval_id, decision
    waiting = deployment.cli("approvals", "-q", token=rm).stdout.split()
    assert waiting == [decision.approval_id]
    deployment.cli("approve", decision.approval_id, "--reason", "the draft reads well", token=rm)
    again = session.decide("send_reply", 0.01, approval_id=decision.approval_id)
    assert again.verdict == "allow", again
    session.report(again, "ok", actual_cost=0.01, latency_ms=120.0)
    return decision.approval_id


@pytest.mark.slow
def test_an_agent_goes_from_an_empty_database_to_a_completed_rollout_with_the_cli(tmp_path: Path) -> None:
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "quick.yaml").write_text(POLICY)
    with Deployment(tmp_path, policy_dir=policies) as deployment:
        assert "ok  " in deployment.cli("policy", "check", str(policies)).stdout
        deployment.cli("db", "upgrade")
        rm = deployment.cli("token", "create", "--role", "release_manager", "--name", "ana").stdout.strip()
        deployment.serve(workers=2)
        deployment.scheduler(interval="1s")

        deployment.cli("agent", "register", "my-agent", "--policy", "quick", token=rm)
        deployment.cli("agent", "set-stable", "my-agent", "v1", "--reason", "what runs today", token=rm)
        deployment.cli("rollout", "start", "my-agent", "v2", "--reason", "shorter answers", token=rm)
        runtime = deployment.cli("token", "create", "--role", "agent", "--agent", "my-agent", "--name", "runtime",
                                 token=rm).stdout.strip()
        gk = Gatekeeper(deployment.url, runtime, timeout=10.0)

        approved, stages_seen = None, []
        deadline = time.monotonic() + DEADLINE_S
        while time.monotonic() < deadline:
            rollout = status(deployment, rm)["rollout"]
            if rollout["state"] == "completed":
                break
            assert rollout["state"] in ("progressing", "held"), rollout
            if not stages_seen or stages_seen[-1] != rollout["stage"]:
                stages_seen.append(rollout["stage"])
            if rollout["stage"] == "twin":
                for _ in range(2):
                    run_flow(gk.start_session("my-agent", environment="twin", scenario="answer-question",
                                              twin_snapshot_at=datetime.now(UTC)))
                continue
            for _ in range(3):
                session = gk.start_session("my-agent")
                if rollout["stage"] == "canary" and session.arm == "candidate" and approved is None:
                    approved = ask_and_approve(deployment, rm, session)
                run_flow(session)
                mirror = session.mirror_session()
                if mirror is not None:
                    run_flow(mirror)

        final = status(deployment, rm)
        assert final["rollout"]["state"] == "completed", final
        assert final["stable_version"] == "v2"
        assert stages_seen == ["twin", "shadow", "canary", "expansion"]
        assert approved is not None
        decided = json.loads(deployment.cli("approvals", "--state", "approved", "--json", token=rm).stdout)
        assert [(a["approval_id"], a["decided_by"]) for a in decided] == [(approved, "release_manager:ana")]
        history = json.loads(deployment.cli("history", "my-agent", "--kind", "transition", "--json",
                                            token=rm).stdout)
        moves = [(e["actor"], e["action"], e["to"]["stage"], e["to"]["state"]) for e in reversed(history["items"])
                 if e["action"] not in ("hold", "release")]  # holds while evidence gathers, and their releases
        assert moves == [("release_manager:ana", "start", "twin", "progressing"),
                         ("scheduler", "promote", "shadow", "progressing"),
                         ("scheduler", "promote", "canary", "progressing"),
                         ("scheduler", "promote", "expansion", "progressing"),
                         ("scheduler", "promote", "expansion", "completed")]
