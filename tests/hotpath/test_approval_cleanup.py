"""Pending approvals are cancelled when their session ends or their rollout leaves the stage they were asked in."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask

from tests.support.runtime import Runtime, counts

TOOL = "close_account"  # not named by the policy, so irreversible; no sequence rule limits it


def waiting(runtime: Runtime, **session: Any) -> tuple[str, str]:
    """Open a candidate session and ask for a call that needs a person; return (session id, approval id)."""
    session_id = runtime.session(**(session or {"candidate": True}))["session_id"]
    found = runtime.decide(session_id, TOOL, 0.05, arguments={"account": 7})
    assert found["verdict"] == "approval_required"
    return session_id, found["approval_id"]


def approval(runtime: Runtime, approval_id: str) -> dict[str, Any]:
    found: dict[str, Any] = runtime.ok(runtime.client.get(f"/v1/approvals/{approval_id}", headers=runtime.agent))
    return found


def test_ending_a_session_cancels_its_pending_approvals(runtime: Runtime, app: Flask,
                                                        viewer: dict[str, str]) -> None:
    runtime.setup("canary", 0)
    ended, cancelled = waiting(runtime)
    _, kept = waiting(runtime)
    runtime.ok(runtime.client.post(f"/v1/sessions/{ended}/end", json={"status": "ok"}, headers=runtime.agent))
    found = approval(runtime, cancelled)
    assert (found["state"], found["decision_reason"], found["stage"]) == ("cancelled", "the session ended",
                                                                          "canary")
    assert approval(runtime, kept)["state"] == "pending"
    refused = runtime.client.post(f"/v1/approvals/{cancelled}/approve", json={}, headers=runtime.rm)
    assert refused.status_code == 409 and "cancelled" in refused.get_json()["error"]["message"]
    listed = runtime.ok(runtime.client.get("/v1/approvals?state=cancelled", headers=viewer))
    assert [a["approval_id"] for a in listed] == [cancelled]
    assert [a["approval_id"] for a in runtime.ok(runtime.client.get("/v1/approvals", headers=viewer))] == [kept]
    assert counts(app, "SELECT count(*) FROM approvals WHERE state = 'pending'")[0] == 1


# action (and body) taken at canary tier 0 -> whether a pending canary approval survives it
TRANSITIONS: list[tuple[str, dict[str, Any], bool, str | None]] = [
    ("promote", {}, True, None),  # canary 1% -> 5%: still canary
    ("pause", {}, True, None),
    ("rollback", {"to_stage": "shadow"}, False, "the rollout left canary"),
    ("kill", {}, False, "the rollout was killed"),
    ("abort", {}, False, "the rollout was aborted"),
    ("promote", {"full": True}, False, "the rollout was completed"),
]


@pytest.mark.parametrize(("action", "body", "kept", "reason"), TRANSITIONS)
def test_a_transition_that_leaves_the_stage_cancels_its_pending_approvals(
        runtime: Runtime, action: str, body: dict[str, Any], kept: bool, reason: str | None) -> None:
    runtime.setup("canary", 0)
    session, pending = waiting(runtime)
    _, approved = waiting(runtime)
    runtime.ok(runtime.client.post(f"/v1/approvals/{approved}/approve", json={}, headers=runtime.rm))
    runtime.act(action, **body)
    found = approval(runtime, pending)
    assert (found["state"], found["decision_reason"]) == (("pending", None) if kept else ("cancelled", reason))
    assert approval(runtime, approved)["state"] == "approved"  # a person's yes is not taken back
    if action == "kill":  # the session is still open; the kill switch answers before any approval
        again = runtime.decide(session, TOOL, 0.05, approval_id=pending, arguments={"account": 7})
        assert (again["verdict"], again["reason"]) == ("deny", "kill_switch")


def test_leaving_twin_cancels_the_twin_runs_approvals(runtime: Runtime) -> None:
    runtime.setup("twin", 0)
    session, pending = waiting(runtime, environment="twin")
    assert approval(runtime, pending)["stage"] == "twin"
    runtime.act("promote")
    assert approval(runtime, pending)["state"] == "cancelled"
    again = runtime.decide(session, TOOL, 0.05, approval_id=pending, arguments={"account": 7})
    assert (again["reason"], again["message"]) == ("approval_cancelled", (
        "The approval for this call was cancelled because its session ended or the rollout left the stage it was "
        "asked in; send the call again without it to ask for a new one."))


def test_a_refused_transition_cancels_nothing(runtime: Runtime) -> None:
    runtime.setup("canary", 0)
    _, pending = waiting(runtime)
    refused = runtime.client.post("/v1/agents/bot/rollback", json={"reason": "r", "to_stage": "expansion"},
                                  headers=runtime.rm)
    assert refused.status_code in (400, 409)
    assert approval(runtime, pending)["state"] == "pending"


def test_the_kill_switch_cancels_pending_approvals_in_its_own_transaction(runtime: Runtime) -> None:
    runtime.setup("canary", 0)
    session, pending = waiting(runtime)
    decisions = [runtime.decide(session, "search_kb")["decision_id"] for _ in range(10)]
    tripped = [runtime.report(d, "error" if n < 3 else "ok")["kill_switch_tripped"] for n, d in enumerate(decisions)]
    assert tripped[-1] is True
    found = approval(runtime, pending)
    assert (found["state"], found["decision_reason"]) == ("cancelled", "the rollout was killed")
