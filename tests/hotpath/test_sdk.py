"""The Python SDK against the real app served on a loopback port, and against no server at all."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from flask import Flask

from gatekeeper.client import ApprovalRequired, Denied, Gatekeeper, Session, Shadowed, Unreachable
from gatekeeper.errors import BadRequest, Conflict, Forbidden, NotFound, Unauthorized
from tests.support.runtime import Runtime, counts, key_for


@pytest.fixture
def gk(runtime: Runtime, live_url: str) -> Gatekeeper:
    token = runtime.agent["Authorization"].removeprefix("Bearer ")
    return Gatekeeper(live_url, token, timeout=5)


def _candidate(runtime: Runtime, gk: Gatekeeper, stage: str = "canary") -> Session:
    runtime.setup(stage, 0)
    key = key_for("bot", runtime.rollout_id, 1.0 if stage == "canary" else 50.0, inside=True)
    return gk.start_session("bot", session_key=key)


def test_allowed_calls_run_and_report_outcome_and_latency(runtime: Runtime, gk: Gatekeeper, app: Flask) -> None:
    session = _candidate(runtime, gk)
    assert (session.arm, session.version, session.caps) == ("candidate", "v2", {"tool_calls": 20, "spend": 0.5})
    ran: list[str] = []

    @session.guarded_tool("update_ticket", cost=0.05, preview=lambda ticket: f"update {ticket}",
                          actual_cost=lambda result: 0.02)
    def update_ticket(ticket: str) -> str:
        ran.append(ticket)
        return f"updated {ticket}"

    assert update_ticket("T-1") == "updated T-1" and ran == ["T-1"]
    row = counts(app, "SELECT outcome_status, actual_cost_micros, latency_ms, preview FROM decisions")
    assert (row[0], row[1], row[3]) == ("ok", 20_000, "update T-1") and row[2] > 0

    @session.guarded_tool("search_kb", cost=0.01)
    def broken() -> None:
        raise TimeoutError("the knowledge base timed out")

    with pytest.raises(TimeoutError):
        broken()
    assert counts(app, "SELECT outcome_status FROM decisions WHERE tool = 'search_kb'")[0] == "error"
    with session.guarded_tool("search_kb", cost=0.01) as call:
        call.actual_cost = 0.003
    assert counts(app, "SELECT count(*) FROM decisions WHERE outcome_status = 'ok'")[0] == 2
    summary = session.end("ok")
    assert summary["tool_calls"] == 3 and summary["spend"] == pytest.approx(0.033)


def test_shadow_deny_and_approval_do_not_execute(runtime: Runtime, gk: Gatekeeper, app: Flask) -> None:
    runtime.setup("shadow", 0)
    live = gk.start_session("bot", session_key=key_for("bot", runtime.rollout_id, 50.0, inside=True))
    mirror = live.mirror_session()
    assert live.arm == "stable" and mirror is not None and mirror.version == "v2"
    ran: list[str] = []
    with pytest.raises(Shadowed) as shadowed:
        mirror.guarded_tool("update_ticket", cost=0.01)(lambda: ran.append("update"))()
    assert shadowed.value.decision.verdict == "shadow" and ran == []
    with pytest.raises(Shadowed) as shadowed, mirror.guarded_tool("refund_payment", cost=0.01):
        ran.append("refund")
    assert shadowed.value.reason == "shadow" and ran == []
    with pytest.raises(Denied) as denied, live.guarded_tool("refund_payment", cost=0.01):
        ran.append("refund")
    assert denied.value.reason == "sequence_before" and ran == []
    assert counts(app, "SELECT count(*) FROM decisions WHERE outcome_status IS NOT NULL")[0] == 0


def test_approval_required_then_approved(runtime: Runtime, gk: Gatekeeper) -> None:
    session = _candidate(runtime, gk)
    with pytest.raises(ApprovalRequired) as needed:
        session.guarded_tool("send_email", cost=0.01)(lambda: None)()
    approval = needed.value.approval_id
    assert approval and gk.approval(approval)["state"] == "pending"
    runtime.ok(runtime.client.post(f"/v1/approvals/{approval}/approve", json={}, headers=runtime.rm))
    assert gk.approval(approval)["state"] == "approved"
    decision = session.decide("send_email", 0.01, approval_id=approval)
    assert decision.allowed and decision.remaining_tool_calls == 19
    assert session.report(decision, "ok", latency_ms=3)["status"] == "ok"
    with pytest.raises(Conflict):
        session.report(decision, "error")


def test_server_errors_arrive_as_typed_exceptions(runtime: Runtime, gk: Gatekeeper, live_url: str) -> None:
    session = _candidate(runtime, gk)
    with pytest.raises(BadRequest) as bad:
        session.decide("search_kb", -1.0)
    assert bad.value.field == "cost"
    with pytest.raises(NotFound):
        gk.session("0" * 24).decide("search_kb", 0.01)
    with pytest.raises(Forbidden):
        gk.start_session("other-bot")
    with pytest.raises(Unauthorized):
        Gatekeeper(live_url, "gk_wrong").start_session("bot")


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A loopback port that accepts connections and never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    try:
        yield int(listener.getsockname()[1])
    finally:
        listener.close()


@pytest.mark.parametrize("answers", ["never", "refuses"])
def test_fails_closed_for_non_read_only_tools_when_the_server_is_down(silent_port: int, answers: str) -> None:
    url = f"http://127.0.0.1:{silent_port}" if answers == "never" else "http://127.0.0.1:9"
    gk = Gatekeeper(url, "gk_any", timeout=0.3)
    with pytest.raises(Unreachable):
        gk.start_session("bot")
    session = gk.session("0" * 24, agent="bot")
    ran: list[str] = []
    with pytest.raises(Unreachable):
        session.guarded_tool("send_email", cost=0.01)(lambda: ran.append("email"))()
    assert ran == []
    session.guarded_tool("search_kb", cost=0.01, read_only=True)(lambda: ran.append("search"))()
    assert ran == ["search"]  # read-only tools fail open
    opened = Gatekeeper(url, "gk_any", timeout=0.3, fail_closed=False).session("0" * 24)
    opened.guarded_tool("send_email", cost=0.01)(lambda: ran.append("email"))()
    assert ran == ["search", "email"]  # configured to fail open


def test_the_sdk_sends_arguments_and_request_ids_and_reads_the_message(runtime: Runtime, gk: Gatekeeper,
                                                                      app: Flask) -> None:
    session = _candidate(runtime, gk)
    first = session.decide("search_kb", 0.02, arguments={"query": "refunds", "password": "p"}, request_id="q-1")
    again = session.decide("search_kb", 0.02, arguments={"password": "p", "query": "refunds"}, request_id="q-1")
    assert (first.verdict, first.message) == ("allow", "The call may run.") and again == first
    assert counts(app, "SELECT count(*), max(arguments) FROM decisions") == (
        1, '{"password":"[redacted]","query":"refunds"}')
    with pytest.raises(Conflict):
        session.decide("search_kb", 0.05, request_id="q-1", arguments={"query": "refunds", "password": "p"})
    waiting = session.decide("send_email", 0.01, arguments={"to": "ana"})
    assert waiting.message.startswith("A person must approve this call first")
    assert gk.approval(waiting.approval_id or "")["arguments"] == {"to": "ana"}
