"""The kill switch in the path: it trips on exactly the outcome report that crosses the threshold."""

from __future__ import annotations

from typing import Any

from flask import Flask

from gatekeeper import decisions
from gatekeeper.core.budgets import to_micros
from tests.support.app import svc
from tests.support.runtime import Runtime
from tests.support.scrape import parse, values

T0 = 1_900_000_000.0


def _kill_transitions(runtime: Runtime) -> list[dict[str, Any]]:
    history = runtime.ok(runtime.client.get("/v1/agents/bot/history?kind=transition", headers=runtime.rm))
    return [entry for entry in history["items"] if entry["action"] == "kill"]


def test_trips_on_the_report_that_crosses_and_denies_every_later_candidate_call(runtime: Runtime) -> None:
    runtime.setup("canary", 0)
    candidate = runtime.session(candidate=True)["session_id"]
    stable = runtime.session(candidate=False)["session_id"]
    decisions = [runtime.decide(candidate, "search_kb", 0.01)["decision_id"] for _ in range(14)]
    # min_calls 10, max_error_rate 0.25: 8 ok + 2 errors is 20%; the 11th report (an error) makes 3/11 = 27%.
    statuses = ["ok"] * 8 + ["error"] * 2
    for decision, status in zip(decisions, statuses, strict=False):
        assert runtime.report(decision, status)["kill_switch_tripped"] is False
        assert runtime.rollout()["state"] == "progressing"
    assert runtime.report(decisions[10], "error")["kill_switch_tripped"] is True
    rollout = runtime.rollout()
    assert (rollout["state"], rollout["stage"], rollout["kill_switch_open"]) == ("killed", "shadow", True)
    [kill] = _kill_transitions(runtime)
    assert kill["actor"] == "kill_switch" and kill["metrics"]["calls"] == 11 and kill["metrics"]["errors"] == 3
    assert abs(kill["metrics"]["error_rate"] - 3 / 11) < 1e-9
    for decision in decisions[11:]:  # later error reports change nothing more
        assert runtime.report(decision, "error")["kill_switch_tripped"] is False
    assert len(_kill_transitions(runtime)) == 1
    for tool in ("search_kb", "update_ticket", "send_email"):
        found = runtime.decide(candidate, tool)
        assert (found["verdict"], found["reason"]) == ("deny", "kill_switch")
        assert runtime.decide(stable, tool if tool != "send_email" else "update_ticket")["verdict"] == "allow"
    assert runtime.session(environment="twin")["arm"] == "stable"
    assert runtime.session(session_key="new")["arm"] == "stable"
    opened = values(parse(runtime.client.get("/metrics").get_data(as_text=True)), "gatekeeper_kill_switch_open")
    assert opened == [1.0]


def test_manual_kill_and_resume_through_the_api(runtime: Runtime) -> None:
    runtime.setup("canary", 1)
    candidate = runtime.session(candidate=True, percent=5.0)["session_id"]
    runtime.act("kill")
    assert runtime.decide(candidate, "search_kb")["reason"] == "kill_switch"
    runtime.act("resume")
    assert (runtime.rollout()["state"], runtime.rollout()["stage"]) == ("progressing", "shadow")
    # Back in shadow, the live candidate session only acts where shadow lets it.
    assert runtime.decide(candidate, "search_kb")["verdict"] == "allow"
    assert runtime.decide(candidate, "update_ticket")["verdict"] == "shadow"


def _run(app: Flask, session: str, status: str, *, now: float) -> bool:
    decided = decisions.decide(svc(app), decisions.Ask(session, "search_kb", to_micros(0.001)), scope="bot",
                               now=now)
    assert decided.verdict.verdict == "allow", decided.verdict
    reported = decisions.report_outcome(svc(app), decided.decision_id, scope="bot", status=status,
                                        actual_micros=None, latency_ms=None, now=now)
    return reported.kill_switch_tripped


def test_only_outcomes_inside_the_window_count(runtime: Runtime, app: Flask) -> None:
    runtime.setup("expansion", 3)  # 100%: every live session is a candidate
    sessions_ = [runtime.session(session_key=f"s{n}")["session_id"] for n in range(3)]
    twin = runtime.session(environment="twin")["session_id"]
    assert not any(_run(app, twin, "error", now=T0) for _ in range(15)), "twin runs are evidence, not traffic"
    assert not any(_run(app, sessions_[0], "error", now=T0) for _ in range(9)), "9 calls are too few"
    assert not _run(app, sessions_[1], "error", now=T0 + 61), "the 9 errors at T0 left the 60 s window"
    assert not any(_run(app, sessions_[1], "ok", now=T0 + 62) for _ in range(9))
    assert not _run(app, sessions_[2], "error", now=T0 + 62)  # 2/11
    assert not _run(app, sessions_[2], "error", now=T0 + 62)  # 3/12 = 25%: not above
    assert _run(app, sessions_[2], "error", now=T0 + 62)  # 4/13: above 25%, trips here
    assert runtime.rollout()["state"] == "killed"
