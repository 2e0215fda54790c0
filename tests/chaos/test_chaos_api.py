"""The decision answer's `chaos` (SPEC §5) over the real app: only a candidate's twin sessions, drawn per seed and
reserved call, the same for a retry; the session's seed; graceful handling judged when the run ends."""

from __future__ import annotations

from flask import Flask

from gatekeeper.api.runtime_schemas import DecisionView
from tests.support.runtime import Runtime, counts


def _chaos_of(runtime: Runtime, session_id: str, calls: int, tool: str = "search_kb") -> list[object]:
    found = []
    for _ in range(calls):
        answer = runtime.decide(session_id, tool, 0.001)
        assert answer["verdict"] == "allow" and "chaos" in answer
        assert DecisionView.model_validate(answer).model_dump(mode="json", exclude={"approval_id"}) == answer
        found.append(answer["chaos"])
    return found


def test_twin_sessions_get_the_same_chaos_for_the_same_seed_and_live_ones_none(runtime: Runtime, app: Flask) -> None:
    runtime.setup("twin", 0)
    one = runtime.session(environment="twin", seed="seed-7")
    two = runtime.session(environment="twin", seed="seed-7")
    other = runtime.session(environment="twin")
    assert (one["seed"], other["seed"]) == ("seed-7", other["session_id"])  # default: the session id
    first = _chaos_of(runtime, one["session_id"], 20)
    assert first == _chaos_of(runtime, two["session_id"], 20) != _chaos_of(runtime, other["session_id"], 20)
    assert None in first and {c["fault"] for c in first if c} >= {"error", "timeout", None}
    assert {c["delay_ms"] for c in first if c} <= {0, 40}
    assert counts(app, "SELECT seed FROM sessions WHERE id = :id", id=two["session_id"]) == ("seed-7",)
    # A tool class's entry: every irreversible call times out (approvals apply in twin, as in canary).
    three = runtime.session(environment="twin")["session_id"]
    asked = runtime.decide(three, "send_email", 0.01)
    assert asked["verdict"] == "approval_required" and "chaos" not in asked
    runtime.ok(runtime.client.post(f"/v1/approvals/{asked['approval_id']}/approve", json={"reason": "twin"},
                                   headers=runtime.rm))
    allowed = runtime.decide(three, "send_email", 0.01, approval_id=asked["approval_id"])
    assert (allowed["verdict"], allowed["chaos"]) == ("allow", {"fault": "timeout", "delay_ms": 0})
    live = runtime.session(candidate=False)
    assert "seed" not in live and "chaos" not in runtime.decide(live["session_id"], "search_kb", 0.001)


def test_a_retry_under_its_request_id_gets_the_first_chaos_and_refusals_take_no_index(runtime: Runtime) -> None:
    runtime.setup("twin", 0)
    one = runtime.session(environment="twin", seed="s")
    two = runtime.session(environment="twin", seed="s")
    calls = [runtime.decide(one["session_id"], "search_kb", 0.001, request_id=f"r{n}") for n in range(6)]
    again = [runtime.decide(one["session_id"], "search_kb", 0.001, request_id=f"r{n}") for n in range(6)]
    assert [c["chaos"] for c in calls] == [c["chaos"] for c in again]
    # A denied call reserves nothing, so the next allowed call keeps its place in the draw.
    assert runtime.decide(two["session_id"], "refund_payment", 0.01)["verdict"] == "deny"
    assert [c["chaos"] for c in calls] == _chaos_of(runtime, two["session_id"], 6)


def test_a_seed_is_for_twin_sessions(runtime: Runtime) -> None:
    runtime.setup("twin", 0)
    answer = runtime.client.post("/v1/sessions", json={"agent": "bot", "seed": "x"}, headers=runtime.agent)
    assert answer.status_code == 400 and answer.get_json()["error"]["field"] == "seed"


def test_the_end_of_a_scenario_run_judges_retries_and_a_clean_end(runtime: Runtime) -> None:
    runtime.setup("twin", 0)
    session = runtime.session(environment="twin", scenario="refund-request")["session_id"]
    for status in ("error", "error", "error"):
        runtime.report(runtime.decide(session, "lookup_customer", 0.001)["decision_id"], status)
    summary = runtime.ok(runtime.client.post(f"/v1/sessions/{session}/end", json={"status": "abandoned"},
                                             headers=runtime.agent))
    assert summary["passed"] is False
    assert summary["trajectory"]["problems"] == [
        "expected refund_payment in order ['lookup_customer', 'refund_payment', 'send_email']",
        "max_retries: lookup_customer was retried 2 times after failing (at most 1)",
        "ends_cleanly: the run was abandoned, not ended by the agent"]
