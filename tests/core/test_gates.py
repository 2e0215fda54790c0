"""Table-driven tests of the pure gates: fixed times, no clock, no I/O."""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import pytest

from gatekeeper.core.agreement import MirroredPair, agreement, pair_agrees
from gatekeeper.core.gates import (
    Counters,
    Limits,
    ShadowSignals,
    SourceStatus,
    TwinRun,
    Where,
    assess,
    evaluate_shadow_gate,
    evaluate_twin_gate,
    next_transition,
)
from gatekeeper.core.policy import ExtraQuery, ShadowGate, TierGate, TwinGate
from gatekeeper.core.tier_gate import TierSignals, evaluate_tier_gate

NOW = 1_700_000_000.0
GATE = TierGate(interval_s=30, window_s=600, soak_s=1800, min_sessions=100, max_error_rate=0.02,
                max_p95_latency_s=2.0, max_cost_per_session_micros=400_000, failure_limit=2,
                on_metrics_error="hold", error_limit=4, queries=())
HEALTHY = TierSignals(sessions=200, tool_calls=1000, errors=5, p95_latency_s=0.8, spend_dollars=40.0)
WHERE = Where("canary", 1, "canary 5%", 5.0)
PROM = SourceStatus("prometheus")
DOWN = SourceStatus("prometheus", available=False, unavailable_since=NOW - 60, error="connection refused")
SOAKED = NOW - 3600
ZERO = Counters()
FRESH = NOW - 60


def tier(signals: TierSignals | None = HEALTHY, *, gate: TierGate = GATE, started: float = SOAKED,
         counters: Counters = ZERO, source: SourceStatus = PROM) -> Any:
    return evaluate_tier_gate(gate, signals, where=WHERE, tier_started_at=started, counters=counters,
                              source=source, now=NOW)


@pytest.mark.parametrize(("value", "threshold", "comparison", "expected"), [
    (0.01, 0.02, "<=", "pass"), (0.02, 0.02, "<=", "pass"), (0.03, 0.02, "<=", "fail"),
    (150, 100, ">=", "pass"), (99, 100, ">=", "fail"), (None, 1, "<=", "no_data"),
    (math.nan, 1, "<=", "no_data"), (math.inf, 1, "<=", "no_data"),
])
def test_assess(value: float | None, threshold: float, comparison: Any, expected: str) -> None:
    assert assess(value, threshold, comparison) == expected


# signals, started, counters, source -> result, action, failures, errors, reason fragment
TIER_CASES = [
    ("healthy and soaked", HEALTHY, SOAKED, Counters(), PROM, "promote", "promote", 0, 0, "every check"),
    ("healthy, soaking", HEALTHY, FRESH, Counters(), PROM, "hold", "wait", 0, 0, "soaking: 60s of 1800s"),
    ("too few sessions", replace(HEALTHY, sessions=12), SOAKED, Counters(), PROM, "hold", "hold", 0, 0,
     "too few sessions: 12 < 100"),
    ("no sessions at all", TierSignals(), SOAKED, Counters(), PROM, "hold", "hold", 0, 0, "too few sessions"),
    ("NaN latency", replace(HEALTHY, p95_latency_s=math.nan), SOAKED, Counters(), PROM, "hold", "hold", 0, 0,
     "no data for p95_latency_s"),
    ("no tool calls: no error rate", replace(HEALTHY, tool_calls=0, errors=0), SOAKED, Counters(), PROM,
     "hold", "hold", 0, 0, "no data for error_rate"),
    ("first failure holds", replace(HEALTHY, errors=100), SOAKED, Counters(), PROM, "hold", "hold", 1, 0,
     "error_rate failed: 0.1 > 0.02"),
    ("second failure rolls back", replace(HEALTHY, errors=100), SOAKED, Counters(failures=1), PROM,
     "rollback", "rollback", 2, 0, "2 consecutive failed evaluations (failure_limit 2)"),
    ("failure during soak still counts", replace(HEALTHY, p95_latency_s=5), FRESH, Counters(failures=1), PROM,
     "rollback", "rollback", 2, 0, "p95_latency_s failed"),
    ("failure with too few sessions only holds", replace(HEALTHY, sessions=10, errors=500), SOAKED,
     Counters(failures=1), PROM, "hold", "hold", 1, 0, "not yet counted"),
    ("cost per session", replace(HEALTHY, spend_dollars=100.0), SOAKED, Counters(), PROM, "hold", "hold", 1, 0,
     "cost_per_session failed: 0.5 > 0.4"),
    ("a pass clears failures", HEALTHY, FRESH, Counters(failures=1, errors=2), PROM, "hold", "wait", 0, 0,
     "soaking"),
    ("outage holds", None, SOAKED, Counters(), DOWN, "error", "hold", 0, 1, "metrics unavailable"),
    ("outage keeps failures", None, SOAKED, Counters(failures=1, errors=3), DOWN, "error", "hold", 1, 4,
     "4 consecutive metrics errors"),
]


@pytest.mark.parametrize(("case", "signals", "started", "counters", "source", "result", "action", "failures",
                          "errors", "reason"), TIER_CASES, ids=[c[0] for c in TIER_CASES])
def test_tier_gate(case: str, signals: TierSignals | None, started: float, counters: Counters,
                   source: SourceStatus, result: str, action: str, failures: int, errors: int,
                   reason: str) -> None:
    report = tier(signals, started=started, counters=counters, source=source)
    assert (report.result, report.action) == (result, action)
    assert (report.decision.counters.failures, report.decision.counters.errors) == (failures, errors)
    assert any(reason in r for r in report.decision.reasons), report.decision.reasons


def test_outage_never_promotes_and_rolls_back_only_when_the_policy_says_so() -> None:
    rollback_gate = replace(GATE, on_metrics_error="rollback", error_limit=2)
    assert tier(None, source=DOWN, counters=Counters(errors=5)).action == "hold"
    assert tier(None, gate=rollback_gate, source=DOWN, counters=Counters(errors=0)).action == "hold"
    report = tier(None, gate=rollback_gate, source=DOWN, counters=Counters(errors=1))
    assert (report.result, report.action) == ("rollback", "rollback")
    assert {c.result for c in report.checks} == {"error"}


def test_extra_queries_pass_fail_and_error_apart() -> None:
    gate = replace(GATE, queries=(ExtraQuery("denials", "q", max=0.05, min=None),
                                  ExtraQuery("band", "q", max=10, min=1)))
    ok = tier(replace(HEALTHY, extra={"denials": 0.01, "band": 5}), gate=gate)
    assert ok.result == "promote"
    assert [c.name for c in ok.checks][-3:] == ["denials", "band (max)", "band (min)"]
    low = tier(replace(HEALTHY, extra={"denials": 0.01, "band": 0.5}), gate=gate)
    assert (low.result, low.decision.counters.failures) == ("hold", 1)
    broken = tier(replace(HEALTHY, extra={"band": 5}, extra_errors={"denials": "bad_data: parse error"}),
                  gate=gate)
    assert (broken.result, broken.decision.counters.errors) == ("error", 1)
    assert [c.result for c in broken.checks if c.name == "denials"] == ["error"]


def test_report_shape_matches_the_contract() -> None:
    report = tier(replace(HEALTHY, p95_latency_s=math.nan)).as_dict()
    assert set(report) >= {"stage", "tier", "tier_label", "result", "reasons", "evaluated_at", "checks", "soak",
                           "metrics_source", "values"}
    assert report["values"] == {"error_rate": 0.005, "p95_latency_s": None, "cost_per_session": 0.2,
                                "overrun_rate": 0.0, "sessions": 200.0, "tool_calls": 1000.0,
                                "traffic_percent": 5.0}
    assert report["soak"] == {"elapsed_s": 3600.0, "required_s": 1800.0}
    assert report["metrics_source"] == {"name": "prometheus", "available": True, "unavailable_since": None,
                                        "error": None}
    latency = next(c for c in report["checks"] if c["name"] == "p95_latency_s")
    assert latency == {"name": "p95_latency_s", "value": None, "threshold": 2.0, "comparison": "<=",
                       "result": "no_data", "detail": "no data"}


SHADOW = ShadowGate(min_sessions=10, soak_s=600, max_error_rate=0.05, max_violation_rate=0.01, min_agreement=0.9)
GOOD_SHADOW = ShadowSignals(sessions=20, calls=200, outcomes=100, errors=1, violations=1, pairs=20,
                            agreeing_pairs=19)
SHADOW_CASES = [
    ("good", GOOD_SHADOW, SOAKED, Counters(), "promote", "promote"),
    ("soaking", GOOD_SHADOW, FRESH, Counters(), "hold", "wait"),
    ("few sessions", replace(GOOD_SHADOW, sessions=3), SOAKED, Counters(), "hold", "hold"),
    ("disagrees", replace(GOOD_SHADOW, agreeing_pairs=10), SOAKED, Counters(), "hold", "hold"),
    ("disagrees again", replace(GOOD_SHADOW, agreeing_pairs=10), SOAKED, Counters(failures=1), "rollback",
     "rollback"),
    ("would-be violations", replace(GOOD_SHADOW, violations=20), SOAKED, Counters(failures=1), "rollback",
     "rollback"),
    ("no pairs ended yet", replace(GOOD_SHADOW, pairs=0, agreeing_pairs=0), SOAKED, Counters(), "hold", "hold"),
]


@pytest.mark.parametrize(("case", "signals", "started", "counters", "result", "action"), SHADOW_CASES,
                         ids=[c[0] for c in SHADOW_CASES])
def test_shadow_gate(case: str, signals: ShadowSignals, started: float, counters: Counters, result: str,
                     action: str) -> None:
    report = evaluate_shadow_gate(SHADOW, signals, where=Where("shadow", 0, "shadow", 0.0),
                                  stage_started_at=started, counters=counters, limits=Limits(2, 4),
                                  source=SourceStatus("builtin"), now=NOW)
    assert (report.result, report.action) == (result, action), report.decision.reasons


TWIN = TwinGate(min_runs=4, min_pass_rate=0.75, max_twin_age_s=86_400)
SCENARIOS = ("refund-request", "faq")
RUNS = [TwinRun("refund-request", True, NOW - 3600), TwinRun("faq", True, NOW - 7200),
        TwinRun("refund-request", True, NOW - 3600), TwinRun("faq", False, NOW - 3600)]
TWIN_CASES = [
    ("enough, passing, covered, fresh", RUNS, "promote", "every check passed"),
    ("too few runs", RUNS[:3], "hold", "too few runs: 3 < 4"),
    ("pass rate too low", [*RUNS[:3], *[TwinRun("faq", False, NOW)] * 2], "hold", "pass_rate failed: 0.6 < 0.75"),
    ("scenario not covered", [TwinRun("faq", True, NOW)] * 4, "hold", "no run of refund-request"),
    ("stale snapshot", [replace(r, snapshot_at=NOW - 90_000) for r in RUNS], "hold", "twin_snapshot_age_s failed"),
    ("no snapshot reported", [replace(r, snapshot_at=None) for r in RUNS], "hold", "send twin_snapshot_at"),
    ("no runs", [], "hold", "too few runs"),
]


@pytest.mark.parametrize(("case", "runs", "result", "reason"), TWIN_CASES, ids=[c[0] for c in TWIN_CASES])
def test_twin_gate(case: str, runs: list[TwinRun], result: str, reason: str) -> None:
    report = evaluate_twin_gate(TWIN, runs, scenarios=SCENARIOS, where=Where("twin", 0, "twin"),
                                source=SourceStatus("builtin"), now=NOW)
    assert report.result == result
    assert report.action != "rollback"  # nothing is behind twin
    assert any(reason in r for r in report.decision.reasons), report.decision.reasons


READ, WRITE = "read_only", "irreversible"


@pytest.mark.parametrize(("stable", "candidate", "agrees"), [
    ([("search", READ), ("refund", WRITE)], [("refund", WRITE)], True),
    ([("refund", WRITE), ("email", WRITE)], [("lookup", READ), ("refund", WRITE), ("email", WRITE)], True),
    ([("refund", WRITE), ("email", WRITE)], [("email", WRITE), ("refund", WRITE)], False),
    ([("refund", WRITE)], [("refund", WRITE), ("refund", WRITE)], False),
    ([], [("search", READ)], True),
    ([("ticket", "reversible")], [], False),
])
def test_pair_agreement(stable: list[tuple[str, str]], candidate: list[tuple[str, str]], agrees: bool) -> None:
    assert pair_agrees(MirroredPair(stable, candidate)) is agrees


def test_agreement_counts_pairs() -> None:
    pairs = [MirroredPair([("a", WRITE)], [("a", WRITE)]), MirroredPair([("a", WRITE)], [])]
    assert agreement(pairs) == (1, 2)
    assert agreement([]) == (0, 0)


@pytest.mark.parametrize(("state", "held_by", "action", "expected"), [
    ("progressing", None, "promote", "promote"),
    ("progressing", None, "wait", None),
    ("progressing", None, "hold", "hold"),
    ("progressing", None, "rollback", "rollback"),
    ("held", "gate", "wait", "release"),
    ("held", "gate", "promote", "promote"),
    ("held", "gate", "hold", None),
    ("held", "outage", "wait", "release"),
    ("held", "alert", "wait", None),
    ("held", "alert", "promote", None),
    ("held", "alert", "rollback", "rollback"),
])
def test_next_transition(state: str, held_by: str | None, action: Any, expected: str | None) -> None:
    assert next_transition(state, held_by, action) == expected
