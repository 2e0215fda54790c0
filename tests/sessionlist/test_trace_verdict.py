"""The session trace (API and page) shows a twin run's verdict: passed, its problems, a stable replay's fidelity."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from tests.support.app import svc
from tests.support.dashboard import signed_in
from tests.support.runtime import POLICY, Runtime

FILE = "hotpath.scenarios.yaml"


def run(runtime: Runtime, calls: list[tuple[str, dict[str, Any]]], *, scenario: str | None = "refund-request",
        arm: str | None = None, passed: bool | None = None, outcome: str = "ok") -> tuple[str, dict[str, Any]]:
    """Run a twin session with these calls and end it; return its id and the end route's answer."""
    body = {"agent": "bot", "environment": "twin", "scenario": scenario, **({"arm": arm} if arm else {})}
    session = runtime.ok(runtime.client.post("/v1/sessions", json=body, headers=runtime.agent))["session_id"]
    for tool, arguments in calls:
        decision = runtime.decide(session, tool, arguments=arguments)
        if decision["verdict"] == "allow":
            runtime.report(decision["decision_id"], outcome)
    ended = runtime.ok(runtime.client.post(f"/v1/sessions/{session}/end", json={"status": "ok", "passed": passed},
                                           headers=runtime.agent))
    return session, ended


def verdict(runtime: Runtime, session: str) -> Any:
    return runtime.ok(runtime.client.get(f"/v1/sessions/{session}", headers=runtime.rm))["verdict"]


GOOD = [("lookup_customer", {}), ("refund_payment", {}), ("send_email", {})]


def test_a_twin_runs_trace_shows_what_the_end_route_judged(runtime: Runtime, users: dict[str, str]) -> None:
    runtime.setup(stage="twin")
    passing, _ = run(runtime, GOOD)
    failing, ended = run(runtime, [("lookup_customer", {}), ("update_ticket", {})])
    harness, _ = run(runtime, GOOD, passed=False)
    free, _ = run(runtime, [("search_kb", {})], scenario=None, passed=True)
    unscripted, _ = run(runtime, [("search_kb", {})], scenario=None, passed=False)
    live = runtime.session()["session_id"]
    open_twin = runtime.ok(runtime.client.post("/v1/sessions", json={
        "agent": "bot", "environment": "twin", "scenario": "refund-request"}, headers=runtime.agent))["session_id"]

    assert verdict(runtime, passing) == {"passed": True, "problems": [], "replay": None}
    shown = verdict(runtime, failing)
    assert shown["passed"] is False and shown["problems"] == ended["trajectory"]["problems"] == [
        "expected refund_payment in order ['lookup_customer', 'refund_payment', 'send_email']",
        "called forbidden tool update_ticket"]
    assert verdict(runtime, harness) == {"passed": False, "replay": None, "problems": [
        "the harness reported failure (or the scenario changed since the run ended)"]}
    assert verdict(runtime, free) == {"passed": True, "problems": [], "replay": None}  # no scenario: the harness's
    assert verdict(runtime, unscripted) == {"passed": False, "problems": ["the harness reported failure"],
                                            "replay": None}
    assert verdict(runtime, live) is None and verdict(runtime, open_twin) is None
    assert runtime.ok(runtime.client.get(f"/v1/sessions/{failing}", headers=runtime.rm))["session"]["passed"] is False

    page = runtime.client.application.test_client()
    signed_in(page, "victor")
    text = html.unescape(page.get(f"/sessions/{failing}").get_data(as_text=True))
    assert 'data-testid="verdict">failed' in text and "called forbidden tool update_ticket" in text
    assert 'data-testid="verdict">passed' in page.get(f"/sessions/{passing}").get_data(as_text=True)
    assert 'data-testid="twin-verdict"' not in page.get(f"/sessions/{live}").get_data(as_text=True)


def test_a_stable_replays_trace_says_whether_it_was_faithful_and_where_it_diverged(
        runtime: Runtime, policy_dir: Path, users: dict[str, str]) -> None:
    (policy_dir / "hotpath.yaml").write_text(POLICY.replace("  twin:\n", f"  twin:\n    scenario_files: [{FILE}]\n"))
    runtime.setup(stage="twin")
    recorded = runtime.session()["session_id"]  # a live stable session at twin
    for tool, arguments in (("lookup_customer", {"customer": "c-7"}), ("refund_payment", {"order": "A-1"}),
                            ("send_email", {"to": "c@x"})):
        runtime.report(runtime.decide(recorded, tool, arguments=arguments)["decision_id"])
    runtime.ok(runtime.client.post(f"/v1/sessions/{recorded}/end", json={"status": "ok"}, headers=runtime.agent))
    runtime.ok(runtime.client.post(f"/v1/sessions/{recorded}/scenario", json={"name": "refund-a1"},
                                   headers=runtime.rm))
    svc(runtime.client.application).policies.reload()
    calls = [("lookup_customer", {}), ("refund_payment", {"order": "A-1"})]
    faithful, first = run(runtime, [*calls, ("send_email", {"to": "c@x"})], scenario="refund-a1", arm="stable")
    drifted, second = run(runtime, [*calls, ("update_ticket", {})], scenario="refund-a1", arm="stable")
    assert verdict(runtime, faithful)["replay"] == first["trajectory"]["replay"] == {
        "faithful": True, "divergence": None, "detail": ""}
    assert verdict(runtime, drifted) == {
        "passed": False, "problems": second["trajectory"]["problems"],
        "replay": {"faithful": False, "divergence": 1, "detail": "step 2: expected send_email, got update_ticket"}}
    page = runtime.client.application.test_client()
    signed_in(page, "victor")
    text = page.get(f"/sessions/{drifted}").get_data(as_text=True)
    assert "Unfaithful replay: step 2: expected send_email, got update_ticket." in text
    assert "Faithful replay" in page.get(f"/sessions/{faithful}").get_data(as_text=True)
