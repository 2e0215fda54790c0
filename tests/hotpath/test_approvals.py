"""Approvals: opened by a verdict, approved or rejected by a person, spent once, expired on time."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest
from flask import Flask

from gatekeeper import approvals, decisions
from gatekeeper.core.budgets import to_micros
from gatekeeper.errors import Conflict
from tests.support.app import svc
from tests.support.runtime import Runtime, counts

T0 = 1_900_000_000.0
TOOL = "close_account"  # not named by the policy, so irreversible; no sequence rule limits it
EXPIRE = 15 * 60


def _ask_for_approval(runtime: Runtime, **body: object) -> tuple[str, dict[str, object]]:
    runtime.setup("canary", 0)
    session = str(runtime.session(candidate=True)["session_id"])
    found = runtime.decide(session, TOOL, 0.05, preview="mail the refund receipt", **body)
    assert (found["verdict"], found["reason"]) == ("approval_required", "approval_required")
    return session, found


def test_approve_then_spend_once(runtime: Runtime, app: Flask, viewer: dict[str, str]) -> None:
    session, found = _ask_for_approval(runtime)
    approval = found["approval_id"]
    queue = runtime.ok(runtime.client.get("/v1/approvals?state=pending", headers=viewer))
    assert [(a["approval_id"], a["tool"], a["tool_class"], a["cost"], a["preview"], a["agent"]) for a in queue] == [
        (approval, "close_account", "irreversible", 0.05, "mail the refund receipt", "bot")]
    assert runtime.ok(runtime.client.get(f"/v1/approvals/{approval}", headers=runtime.agent))["state"] == "pending"
    waiting = runtime.decide(session, TOOL, 0.05, approval_id=approval)
    assert (waiting["verdict"], waiting["reason"], waiting["approval_id"]) == ("approval_required",
                                                                              "approval_pending", approval)
    assert runtime.client.post(f"/v1/approvals/{approval}/approve", json={}, headers=viewer).status_code == 403
    assert runtime.client.post(f"/v1/approvals/{approval}/approve", json={},
                               headers=runtime.agent).status_code == 403
    approved = runtime.ok(runtime.client.post(f"/v1/approvals/{approval}/approve", json={"reason": "receipt ok"},
                                              headers=runtime.rm))
    assert (approved["state"], approved["decided_by"], approved["decision_reason"]) == (
        "approved", "release_manager:alice", "receipt ok")
    allowed = runtime.decide(session, TOOL, 0.04, approval_id=approval)
    assert (allowed["verdict"], allowed["reason"], allowed["remaining"]["tool_calls"]) == ("allow", "", 19)
    reused = runtime.decide(session, TOOL, 0.05, approval_id=approval)
    assert (reused["verdict"], reused["reason"]) == ("deny", "approval_used")
    assert runtime.ok(runtime.client.get(f"/v1/approvals/{approval}", headers=runtime.agent))["used"] is True
    assert runtime.ok(runtime.client.get("/v1/approvals", headers=viewer)) == []
    assert counts(app, "SELECT tool_calls, spend_micros FROM sessions WHERE id = :id", id=session) == (1, 40_000)


def test_reject(runtime: Runtime) -> None:
    session, found = _ask_for_approval(runtime)
    approval = found["approval_id"]
    rejected = runtime.ok(runtime.client.post(f"/v1/approvals/{approval}/reject", json={"reason": "no"},
                                              headers=runtime.rm))
    assert rejected["state"] == "rejected"
    denied = runtime.decide(session, TOOL, 0.05, approval_id=approval)
    assert (denied["verdict"], denied["reason"]) == ("deny", "approval_rejected")
    again = runtime.client.post(f"/v1/approvals/{approval}/approve", json={}, headers=runtime.rm)
    assert again.status_code == 409 and "rejected" in again.get_json()["error"]["message"]
    assert runtime.ok(runtime.client.get("/v1/approvals?state=rejected", headers=runtime.rm))[0]["approval_id"] \
        == approval


@pytest.mark.parametrize(("change", "field"), [({"tool": "refund_payment"}, "approval_id"), ({"cost": 0.06}, "cost")])
def test_an_approval_covers_only_the_call_it_was_asked_for(runtime: Runtime, change: dict[str, object],
                                                           field: str) -> None:
    session, found = _ask_for_approval(runtime)
    runtime.ok(runtime.client.post(f"/v1/approvals/{found['approval_id']}/approve", json={}, headers=runtime.rm))
    body = {"session_id": session, "tool": TOOL, "cost": 0.05, "approval_id": found["approval_id"], **change}
    answer = runtime.client.post("/v1/decisions", json=body, headers=runtime.agent)
    assert answer.status_code == 400 and answer.get_json()["error"]["field"] == field
    assert runtime.decide(session, TOOL, 0.05, approval_id=found["approval_id"])["verdict"] == "allow"


def test_another_agent_cannot_read_an_approval(runtime: Runtime, make_token: Callable[..., dict[str, str]]) -> None:
    _, found = _ask_for_approval(runtime)
    intruder = make_token("agent", agent="other-bot")
    assert runtime.client.get(f"/v1/approvals/{found['approval_id']}", headers=intruder).status_code == 403
    assert runtime.client.get("/v1/approvals/unknown", headers=runtime.rm).status_code == 404


def _decide(app: Flask, session: str, *, now: float, approval_id: str | None = None) -> decisions.Decided:
    ask = decisions.Ask(session, TOOL, to_micros(0.05), approval_id=approval_id)
    return decisions.decide(svc(app), ask, scope="bot", now=now)


def test_pending_approvals_expire_per_policy(runtime: Runtime, app: Flask) -> None:
    runtime.setup("canary", 0)
    session = str(runtime.session(candidate=True)["session_id"])
    first = _decide(app, session, now=T0).approval_id
    second = _decide(app, session, now=T0 + 60).approval_id
    assert first and second
    assert approvals.get(svc(app), first, now=T0 + EXPIRE - 1).state == "pending"
    with svc(app).db.transaction() as db:
        assert [a.id for a in approvals.pending(db, now=T0 + EXPIRE)] == [second]  # the first one expired
    with pytest.raises(Conflict, match="expired"):
        approvals.approve(svc(app), first, actor="rm", reason="late", now=T0 + EXPIRE + 1)
    late = _decide(app, session, now=T0 + EXPIRE + 2, approval_id=first)
    assert (late.verdict.verdict, late.verdict.reason) == ("deny", "approval_expired")
    expired_on_use = _decide(app, session, now=T0 + 60 + EXPIRE, approval_id=second)
    assert (expired_on_use.verdict.verdict, expired_on_use.verdict.reason) == ("deny", "approval_expired")
    assert approvals.get(svc(app), second, now=T0).state == "expired"


def test_an_approval_is_spent_once_under_concurrency(runtime: Runtime, app: Flask) -> None:
    runtime.setup("canary", 0)
    session = str(runtime.session(candidate=True)["session_id"])
    approval = _decide(app, session, now=T0).approval_id
    assert approval is not None
    approvals.approve(svc(app), approval, actor="rm", reason="ok", now=T0 + 1)
    verdicts: list[str] = []
    threads = [threading.Thread(target=lambda: verdicts.append(
        _decide(app, session, now=T0 + 2, approval_id=approval).verdict.reason or "allow")) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sorted(verdicts) == ["allow"] + ["approval_used"] * 15
