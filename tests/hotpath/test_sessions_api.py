"""Sessions through the real app: sticky assignment, caps fixed at start, shadow mirrors, the end summary."""

from __future__ import annotations

import pytest
from flask import Flask

from tests.support.runtime import Runtime, counts, key_for

STABLE_CAPS = {"tool_calls": 60, "spend": 2.0}
CANARY_CAPS = {"tool_calls": 20, "spend": 0.5}
EXPANSION_CAPS = {"tool_calls": 40, "spend": 1.0}


def test_canary_assignment_is_sticky_and_caps_follow_the_arm(runtime: Runtime) -> None:
    runtime.setup("canary", 0)
    inside, outside = (key_for("bot", runtime.rollout_id, 1.0, inside=flag) for flag in (True, False))
    for _ in range(2):  # the same key lands in the same arm every time
        candidate = runtime.session(session_key=inside)
        stable = runtime.session(session_key=outside)
        assert (candidate["arm"], candidate["version"], candidate["caps"]) == ("candidate", "v2", CANARY_CAPS)
        assert (stable["arm"], stable["version"], stable["caps"]) == ("stable", "v1", STABLE_CAPS)
        assert candidate["stage"] == stable["stage"] == "canary" and "mirror" not in candidate


def test_raising_the_tier_moves_only_stable_keys_to_the_candidate(runtime: Runtime) -> None:
    runtime.setup("canary", 0)
    keys = [f"key-{n}" for n in range(300)]
    before = {key: runtime.session(session_key=key)["arm"] for key in keys}
    runtime.act("promote")  # canary 5%
    after = {key: runtime.session(session_key=key)["arm"] for key in keys}
    assert all(after[key] == "candidate" for key in keys if before[key] == "candidate")
    assert sum(arm == "candidate" for arm in after.values()) > sum(arm == "candidate" for arm in before.values())
    runtime.act("promote")  # expansion 10%: candidates get the expansion caps
    moved = runtime.session(session_key=key_for("bot", runtime.rollout_id, 10.0, inside=True))
    assert (moved["arm"], moved["stage"], moved["caps"]) == ("candidate", "expansion", EXPANSION_CAPS)


def test_shadow_mirrors_a_share_of_live_sessions(runtime: Runtime, app: Flask) -> None:
    runtime.setup("shadow", 0)
    mirrored = runtime.session(candidate=True, percent=50.0)
    plain = runtime.session(candidate=False, percent=50.0)
    assert (mirrored["arm"], mirrored["version"], mirrored["caps"]) == ("stable", "v1", STABLE_CAPS)
    assert mirrored["mirror"]["version"] == "v2" and "mirror" not in plain
    row = counts(app, "SELECT arm, stage, mirror_of, cap_tool_calls, environment FROM sessions WHERE id = :id",
                 id=mirrored["mirror"]["session_id"])
    assert tuple(row) == ("candidate", "shadow", mirrored["session_id"], 20, "live")


def test_twin_sessions_run_the_candidate_with_canary_caps(runtime: Runtime, app: Flask) -> None:
    runtime.setup("twin", 0)
    live = runtime.session(session_key="anyone")
    twin = runtime.session(environment="twin", scenario="refund-request", twin_snapshot_at="2030-01-01T00:00:00Z")
    assert (live["arm"], live["version"]) == ("stable", "v1")
    assert (twin["arm"], twin["version"], twin["stage"], twin["caps"]) == ("candidate", "v2", "twin", CANARY_CAPS)
    stored = counts(app, "SELECT twin_snapshot_at, scenario FROM sessions WHERE id = :id", id=twin["session_id"])
    assert tuple(stored) == (1893456000.0, "refund-request")


def test_without_a_rollout_every_session_is_stable(runtime: Runtime) -> None:
    runtime.setup(None)
    for environment in ("live", "twin"):
        found = runtime.session(environment=environment)
        assert (found["arm"], found["version"], found["stage"], found["caps"]) == ("stable", "v1", None, STABLE_CAPS)


@pytest.mark.parametrize(("body", "status", "field"), [
    ({"environment": "twin", "scenario": "nope"}, 400, "scenario"),
    ({"scenario": "refund-request"}, 400, "scenario"),
    ({"environment": "staging"}, 400, "environment"),
    ({"session_key": ""}, 400, "session_key"),
    ({"session_key": "k" * 201}, 400, "session_key"),
    ({"colour": "blue"}, 400, "colour"),
    ({"twin_snapshot_at": "yesterday"}, 400, "twin_snapshot_at"),
])
def test_bad_session_requests_are_refused(runtime: Runtime, app: Flask, body: dict[str, object], status: int,
                                          field: str) -> None:
    runtime.setup("twin", 0)
    answer = runtime.client.post("/v1/sessions", json={"agent": "bot", **body}, headers=runtime.agent)
    assert answer.status_code == status and answer.get_json()["error"]["field"] == field
    assert counts(app, "SELECT count(*) FROM sessions")[0] == 0


def test_an_agent_token_starts_sessions_only_for_its_agent(runtime: Runtime, rm: dict[str, str]) -> None:
    runtime.setup("canary", 0)
    runtime.ok(runtime.client.post("/v1/agents", json={"name": "other-bot", "policy": "hotpath"}, headers=rm))
    answer = runtime.client.post("/v1/sessions", json={"agent": "other-bot"}, headers=runtime.agent)
    assert answer.status_code == 403
    assert runtime.client.post("/v1/sessions", json={"agent": "bot"}, headers=rm).status_code == 403
    assert runtime.client.post("/v1/sessions", json={"agent": "bot"}).status_code == 401


def test_end_returns_the_summary_once(runtime: Runtime) -> None:
    runtime.setup("canary", 0)
    session = runtime.session(candidate=True)
    first = runtime.decide(session["session_id"], "search_kb", 0.02)
    runtime.report(first["decision_id"], actual_cost=0.015)
    runtime.decide(session["session_id"], "refund_payment", 0.02)  # denied: lookup_customer first
    path = f"/v1/sessions/{session['session_id']}/end"
    summary = runtime.ok(runtime.client.post(path, json={"status": "ok"}, headers=runtime.agent))
    assert (summary["status"], summary["tool_calls"], summary["spend"]) == ("ok", 1, 0.015)
    assert summary["decisions"] == {"allow": 1, "deny": 1} and summary["trajectory"] is None
    assert runtime.ok(runtime.client.post(path, json={"status": "ok"}, headers=runtime.agent)) == summary
    assert runtime.client.post(path, json={"status": "error"}, headers=runtime.agent).status_code == 409
    late = runtime.client.post("/v1/decisions", json={"session_id": session["session_id"], "tool": "search_kb",
                                                      "cost": 0}, headers=runtime.agent)
    assert late.status_code == 409 and late.get_json()["error"]["field"] == "session_id"


@pytest.mark.parametrize(("tools", "harness", "passed", "problem"), [
    (["lookup_customer", "refund_payment", "send_email"], True, True, None),
    (["lookup_customer", "search_kb", "refund_payment", "send_email"], None, True, None),
    (["lookup_customer", "refund_payment", "send_email"], False, False, "harness reported failure"),
    (["lookup_customer", "send_email"], True, False, "expected refund_payment"),
    (["lookup_customer", "update_ticket", "refund_payment", "send_email"], True, False, "forbidden"),
])
def test_twin_scenario_runs_are_judged_on_their_trajectory(runtime: Runtime, tools: list[str],
                                                           harness: bool | None, passed: bool,
                                                           problem: str | None) -> None:
    runtime.setup("twin", 0)
    session = runtime.session(environment="twin", scenario="refund-request")
    for tool in tools:
        found = runtime.decide(session["session_id"], tool)
        if found["verdict"] == "approval_required":
            runtime.ok(runtime.client.post(f"/v1/approvals/{found['approval_id']}/approve", json={},
                                           headers=runtime.rm))
            found = runtime.decide(session["session_id"], tool, approval_id=found["approval_id"])
        assert found["verdict"] == "allow", (tool, found)
    body = {"status": "ok"} if harness is None else {"status": "ok", "passed": harness}
    summary = runtime.ok(runtime.client.post(f"/v1/sessions/{session['session_id']}/end", json=body,
                                             headers=runtime.agent))
    assert summary["passed"] is passed and summary["trajectory"]["passed"] is passed
    assert problem is None or any(problem in p for p in summary["trajectory"]["problems"])
