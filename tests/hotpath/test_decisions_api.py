"""Decisions and outcomes through the real app: verdicts per stage, exact caps, settlement, bad input."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask

from gatekeeper.api.runtime_schemas import DecisionView
from tests.support.runtime import Runtime, counts
from tests.support.scrape import parse

TOOL_OF = {"read_only": "search_kb", "reversible": "update_ticket", "irreversible": "send_email"}


def _session(runtime: Runtime, who: str) -> str:
    if who == "twin session":
        return str(runtime.session(environment="twin")["session_id"])
    if who == "mirror":
        return str(runtime.session(candidate=True, percent=50.0)["mirror"]["session_id"])
    if who == "stable":
        return str(runtime.session(candidate=False, percent=100.0 if runtime.rollout_id == 0 else 1.0)["session_id"])
    percent = {"canary": 1.0, "expansion": 10.0}[runtime.rollout()["stage"]]
    return str(runtime.session(candidate=True, percent=percent)["session_id"])


CASES = {  # (stage, who) -> verdict and reason per tool class: read_only, reversible, irreversible
    ("twin", "twin session"): [("allow", ""), ("allow", ""), ("approval_required", "approval_required")],
    ("shadow", "mirror"): [("allow", ""), ("shadow", "shadow"), ("shadow", "shadow")],
    ("canary", "live candidate"): [("allow", ""), ("allow", ""), ("approval_required", "approval_required")],
    ("expansion", "live candidate"): [("allow", ""), ("allow", ""), ("allow", "")],
    ("canary", "stable"): [("allow", ""), ("allow", ""), ("allow", "")],
}


@pytest.mark.parametrize(("stage", "who", "index"), [(s, w, i) for (s, w) in CASES for i in range(3)])
def test_verdicts_by_stage_and_tool_class(runtime: Runtime, app: Flask, stage: str, who: str, index: int) -> None:
    runtime.setup(stage, 0)
    tool = list(TOOL_OF.values())[index]
    found = runtime.decide(_session(runtime, who), tool, 0.05, preview=f"call {tool}")
    assert (found["verdict"], found["reason"]) == CASES[(stage, who)][index]
    assert ("approval_id" in found) == (found["verdict"] == "approval_required")
    # A twin session's allowed call carries `chaos` even when it is null (nothing to rehearse).
    assert DecisionView.model_validate(found).model_dump(mode="json", exclude_none=True) == {
        key: value for key, value in found.items() if value is not None}
    assert ("chaos" in found) == (who == "twin session" and found["verdict"] == "allow")
    row = counts(app, "SELECT verdict, reason, would_verdict, would_reason, preview FROM decisions WHERE id = :id",
                 id=found["decision_id"])
    assert tuple(row[:2]) == CASES[(stage, who)][index] and row[4] == f"call {tool}"
    if found["verdict"] == "shadow":  # what canary would have said, for the shadow gate
        assert tuple(row[2:4]) == (("allow", "") if tool == "update_ticket" else ("approval_required",
                                                                                   "approval_required"))


def test_calls_cap_is_exact(runtime: Runtime, app: Flask) -> None:
    runtime.setup("canary", 0)
    session = runtime.session(candidate=True)["session_id"]
    found = [runtime.decide(session, "search_kb", 0.001) for _ in range(23)]
    assert [f["verdict"] for f in found] == ["allow"] * 20 + ["deny"] * 3
    assert {f["reason"] for f in found[20:]} == {"cap_tool_calls"}
    assert found[19]["remaining"] == {"tool_calls": 0, "spend": 0.48} == found[22]["remaining"]
    row = counts(app, "SELECT tool_calls, spend_micros FROM sessions WHERE id = :id", id=session)
    assert tuple(row) == (20, 20_000)


def test_spend_cap_is_exact_and_settlement_frees_budget(runtime: Runtime, app: Flask) -> None:
    runtime.setup("canary", 0)
    session = runtime.session(candidate=True)["session_id"]
    first, second, third = (runtime.decide(session, "update_ticket", 0.2) for _ in range(3))
    assert [f["verdict"] for f in (first, second, third)] == ["allow", "allow", "deny"]
    assert third["reason"] == "cap_spend" and third["remaining"]["spend"] == pytest.approx(0.1)
    assert runtime.decide(session, "update_ticket", 0.1)["verdict"] == "allow"  # exactly at the cap
    runtime.report(first["decision_id"], actual_cost=0.05)  # the estimate was high: 0.15 back
    assert runtime.decide(session, "update_ticket", 0.15)["verdict"] == "allow"
    assert runtime.decide(session, "update_ticket", 0.000001)["reason"] == "cap_spend"
    assert counts(app, "SELECT spend_micros FROM sessions WHERE id = :id", id=session)[0] == 500_000


def test_outcomes_settle_once_and_refuse_a_different_repeat(runtime: Runtime, app: Flask,
                                                            make_token: Callable[..., dict[str, str]]) -> None:
    runtime.setup("canary", 0)
    session = runtime.session(candidate=True)["session_id"]
    decision = runtime.decide(session, "search_kb", 0.1)["decision_id"]
    first = runtime.report(decision, "ok", actual_cost=0.12, latency_ms=35.5)
    assert first == {"decision_id": decision, "status": "ok", "actual_cost": 0.12, "latency_ms": 35.5,
                     "kill_switch_tripped": False, "overrun": 0.02}
    assert runtime.report(decision, "ok", actual_cost=0.12, latency_ms=35.5) == first
    path = f"/v1/decisions/{decision}/outcome"
    for other in ({"status": "error", "actual_cost": 0.12, "latency_ms": 35.5}, {"status": "ok"},
                  {"status": "ok", "actual_cost": 0.13, "latency_ms": 35.5}):
        assert runtime.client.post(path, json=other, headers=runtime.agent).status_code == 409
    assert counts(app, "SELECT spend_micros FROM sessions WHERE id = :id", id=session)[0] == 120_000
    denied = runtime.decide(session, "refund_payment")["decision_id"]
    assert runtime.client.post(f"/v1/decisions/{denied}/outcome", json={"status": "ok"},
                               headers=runtime.agent).status_code == 409
    intruder = make_token("agent", agent="other-bot", name="intruder")
    assert runtime.client.post(path, json={"status": "ok"}, headers=intruder).status_code == 403
    assert runtime.client.post("/v1/decisions/nope/outcome", json={"status": "ok"},
                               headers=runtime.agent).status_code == 404


def _bad_requests(session: str, ended: str, other: str, approval: str) -> list[tuple[Any, int, str | None]]:
    base = {"session_id": session, "tool": "search_kb", "cost": 0.01}
    raw = json.dumps(base)
    return [
        ({**base, "session_id": "unknown"}, 404, "session_id"),
        ({**base, "session_id": ended}, 409, "session_id"),
        ({**base, "session_id": other}, 403, "session_id"),
        ({**base, "cost": -0.01}, 400, "cost"),
        (raw.replace("0.01", "NaN"), 400, "cost"),
        (raw.replace("0.01", "Infinity"), 400, "cost"),
        (raw.replace("0.01", "1e999"), 400, "cost"),
        ({**base, "cost": 1e9}, 400, "cost"),
        ({**base, "cost": "0.01"}, 400, "cost"),
        ({**base, "cost": True}, 400, "cost"),
        ({**base, "verbose": True}, 400, "verbose"),
        ({**base, "preview": "p" * 1001}, 400, "preview"),
        ({**base, "tool": ""}, 400, "tool"),
        ({**base, "tool": "drop table;"}, 400, "tool"),
        ({**base, "tool": "t" * 201}, 400, "tool"),
        ({k: v for k, v in base.items() if k != "cost"}, 400, "cost"),
        ({**base, "approval_id": approval}, 400, "approval_id"),
        ({**base, "approval_id": "missing"}, 400, "approval_id"),
        ("[1, 2]", 400, None),
        ("{not json", 400, None),
        (json.dumps({**base, "preview": "x" * 70_000}), 413, None),
    ]


def test_bad_input_is_refused_and_changes_nothing(runtime: Runtime, app: Flask, rm: dict[str, str],
                                                  make_token: Callable[..., dict[str, str]]) -> None:
    runtime.setup("canary", 0)
    session = runtime.session(candidate=True)["session_id"]
    ended = runtime.session(candidate=True)["session_id"]
    runtime.ok(runtime.client.post(f"/v1/sessions/{ended}/end", json={}, headers=runtime.agent))
    other_bot = Runtime(runtime.client, rm, make_token("agent", agent="other-bot"), name="other-bot").setup(None)
    other = other_bot.session()["session_id"]
    approval = runtime.decide(runtime.session(candidate=True)["session_id"], "send_email")["approval_id"]
    before = tuple(counts(app, "SELECT (SELECT count(*) FROM decisions), (SELECT count(*) FROM approvals),"
                               " (SELECT sum(tool_calls) FROM sessions), (SELECT sum(spend_micros) FROM sessions)"))
    for body, status, field in _bad_requests(session, ended, other, approval):
        kwargs = {"json": body} if isinstance(body, dict) else {"data": body, "content_type": "application/json"}
        answer = runtime.client.post("/v1/decisions", headers=runtime.agent, **kwargs)
        assert answer.status_code == status, (body if len(str(body)) < 200 else field, answer.get_json())
        error = answer.get_json()["error"]
        assert error["code"] and error["message"] and error.get("field") == field, (field, error)
    after = tuple(counts(app, "SELECT (SELECT count(*) FROM decisions), (SELECT count(*) FROM approvals),"
                              " (SELECT sum(tool_calls) FROM sessions), (SELECT sum(spend_micros) FROM sessions)"))
    assert after == before


@pytest.mark.parametrize("body", [{"status": "fine"}, {"status": "ok", "actual_cost": -1},
                                  {"status": "ok", "actual_cost": 20_000}, {"status": "ok", "latency_ms": -5},
                                  {"status": "ok", "extra": 1}, {}])
def test_bad_outcomes_are_refused_and_change_nothing(runtime: Runtime, app: Flask, body: dict[str, Any]) -> None:
    runtime.setup("canary", 0)
    session = runtime.session(candidate=True)["session_id"]
    decision = runtime.decide(session, "search_kb", 0.1)["decision_id"]
    answer = runtime.client.post(f"/v1/decisions/{decision}/outcome", json=body, headers=runtime.agent)
    assert answer.status_code == 400
    assert counts(app, "SELECT outcome_status FROM decisions WHERE id = :id", id=decision)[0] is None
    assert counts(app, "SELECT spend_micros FROM sessions WHERE id = :id", id=session)[0] == 100_000


def test_metrics_count_decisions_outcomes_and_sessions(runtime: Runtime) -> None:
    runtime.setup("canary", 0)
    session = runtime.session(candidate=True)["session_id"]
    runtime.session(candidate=False)
    for _ in range(3):
        runtime.report(runtime.decide(session, "search_kb", 0.08)["decision_id"], "ok", latency_ms=20)
    runtime.report(runtime.decide(session, "update_ticket", 0.05)["decision_id"], "error", actual_cost=0.01)
    runtime.decide(session, "refund_payment")
    refused = runtime.client.post("/v1/decisions", json={"session_id": "nope", "tool": "x", "cost": 0},
                                 headers=runtime.agent)
    assert refused.status_code == 404
    samples = parse(runtime.client.get("/metrics").get_data(as_text=True))
    labels = (("agent", "bot"), ("arm", "candidate"))
    assert samples[("gatekeeper_decisions_total", (*labels, ("reason", ""), ("stage", "canary"),
                                                   ("verdict", "allow"), ("version", "v2")))] == 4
    assert samples[("gatekeeper_decisions_total", (*labels, ("reason", "sequence_before"), ("stage", "canary"),
                                                   ("verdict", "deny"), ("version", "v2")))] == 1
    assert samples[("gatekeeper_tool_calls_total", (*labels, ("status", "error"), ("tool_class", "reversible"),
                                                    ("version", "v2")))] == 1
    assert samples[("gatekeeper_spend_dollars_total", (*labels, ("version", "v2")))] == pytest.approx(0.25)
    assert samples[("gatekeeper_tool_call_latency_seconds_count", (*labels, ("version", "v2")))] == 3
    assert samples[("gatekeeper_sessions_total", (("agent", "bot"), ("arm", "stable"), ("version", "v1")))] == 1
    assert samples[("gatekeeper_decision_duration_seconds_count", ())] == 6  # the refused one too
    assert samples[("gatekeeper_rollout_info", (("agent", "bot"), ("candidate", "v2"), ("stable", "v1"),
                                                ("stage", "canary")))] == 1
    assert samples[("gatekeeper_rollout_traffic_percent", (("agent", "bot"),))] == 1.0
    assert samples[("gatekeeper_kill_switch_open", (("agent", "bot"),))] == 0
