"""`gate.compare` in the tier gate: pass, fail and inconclusive kept apart, on a real SQLite database."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from gatekeeper.core.comparison import ArmEvidence, ArmSample, Distribution, Moments
from gatekeeper.core.gates import Counters, SourceStatus, Where
from gatekeeper.core.tier_gate import TierSignals, evaluate_tier_gate
from gatekeeper.gate_cycle import evaluate_all
from gatekeeper.metric_sources import BuiltinSource, InMemorySource
from gatekeeper.policy_files import parse_policy, validate_policy_text
from gatekeeper.services import Services
from gatekeeper.tier_signals import SignalRequest
from tests.support.app import REPO
from tests.support.gates import T0, add_session, place, rollout_of

RNG = np.random.default_rng(11)
STABLE_LATENCY = Distribution.of_samples(RNG.lognormal(-1, 0.4, 100_000).tolist())
SAME_LATENCY = Distribution.of_samples(RNG.lognormal(-1, 0.4, 20_000).tolist())
FEW_LATENCIES = Distribution.of_samples(RNG.lognormal(-1, 0.4, 300).tolist())


def arms(candidate_errors: int, *, calls: int = 20_000, latency: Distribution = SAME_LATENCY) -> ArmEvidence:
    return ArmEvidence(ArmSample(calls=Moments.binary(candidate_errors, calls), latency=latency),
                       ArmSample(calls=Moments.binary(1000, 100_000), latency=STABLE_LATENCY))


def signals(evidence: ArmEvidence) -> TierSignals:
    return TierSignals(sessions=200, tool_calls=2000, errors=2, p95_latency_s=0.3, spend_dollars=5.0, arms=evidence)


def policy_text(compare: str) -> str:
    base = (REPO / "policies" / "support-default.yaml").read_text()
    return base.replace("  queries: {}", f"  queries: {{}}\n  compare: {compare}")


def test_the_compare_block_is_read_and_checked() -> None:
    policy = parse_policy(policy_text("{error_rate: {max_increase: 0.5}, p95_latency: {max_increase: 0.2}}"))
    assert policy.canary.gate.compare == policy.expansion.gate.compare
    assert policy.gate.compare is not None and policy.gate.compare.margins == (("error_rate", 0.5),
                                                                                ("p95_latency", 0.2))
    assert policy.gate.compare.confidence == 0.95
    problems = [str(p) for p in validate_policy_text(policy_text("{p95_latncy: {max_increase: 0.2}, confidence: 1.5}"))]
    assert problems == ["<string>: gate.compare.p95_latncy: unknown key 'p95_latncy' (did you mean 'p95_latency'?)",
                        "<string>: gate.compare.confidence: must be a number between 0.5 and 0.9999, not 1.5"]
    problems = [str(p) for p in validate_policy_text(policy_text("{error_rate: {}}"))]
    assert problems == ["<string>: gate.compare.error_rate.max_increase: is required"]


def judge(evidence: ArmEvidence | None, counters: Counters | None = None) -> Any:
    gate = parse_policy(policy_text("{error_rate: {max_increase: 0.5}, p95_latency: {max_increase: 0.2}}")).gate
    gate = type(gate)(**{**gate.__dict__, "soak_s": 0.0})
    sig = signals(evidence) if evidence else TierSignals(sessions=50, tool_calls=500, errors=2, p95_latency_s=0.3,
                                                         spend_dollars=5.0)
    return evaluate_tier_gate(gate, sig, where=Where("canary", 0, "canary 1%", 1.0), tier_started_at=T0,
                              counters=counters or Counters(), source=SourceStatus("memory"), now=T0 + 60, tiers=6)


@pytest.mark.parametrize(("evidence", "results", "action"), [
    (arms(200), ["pass", "pass"], "promote"),
    (arms(400), ["fail", "pass"], "hold"),  # first failure of failure_limit 2
    (arms(3, calls=300, latency=FEW_LATENCIES), ["inconclusive", "inconclusive"], "hold"),
    (arms(200, latency=Distribution.of_samples((np.asarray(SAME_LATENCY.points) * 1.4).tolist())),
     ["pass", "fail"], "hold"),
])
def test_pass_fail_and_inconclusive_are_kept_apart(evidence: ArmEvidence, results: list[str], action: str) -> None:
    report = judge(evidence)
    compared = [c for c in report.checks if c.name.endswith("vs stable")]
    assert [c.result for c in compared] == results
    assert report.action == action
    for check in compared:
        shown = check.as_dict()["compare"]
        assert {"estimate", "lower", "upper", "candidate_n", "stable_n", "margin", "needed"} <= set(shown)
        assert shown["stable_n"] > 0 and shown["candidate_n"] > 0


def test_a_failed_comparison_counts_toward_failure_limit_and_inconclusive_never_promotes() -> None:
    assert judge(arms(400), Counters(failures=1)).action == "rollback"
    held = judge(arms(3, calls=300, latency=FEW_LATENCIES))
    assert held.action == "hold" and held.decision.counters.failures == 0
    assert any("inconclusive" in reason and "more candidate calls" in reason for reason in held.decision.reasons)
    assert judge(None).action == "hold"  # compare configured, no per-arm evidence: never a promotion


def test_the_builtin_source_compares_both_arms_since_the_tier_began(services: Services) -> None:
    rollout = place(services)
    ok, err = ("search_kb", "allow", "ok", 100.0), ("search_kb", "allow", "error", 300.0)
    for index in range(40):
        add_session(services, rollout, calls=[ok] * 9 + [err], started_at=T0 + 0.1 + index / 100)
        add_session(services, rollout, arm="stable", calls=[ok] * 10, started_at=T0 + 0.1 + index / 100)
    add_session(services, rollout, arm="stable", calls=[err] * 10, started_at=T0 - 50)  # before the tier
    add_session(services, rollout, calls=[err] * 10, started_at=T0 + 0.2, mirror_of="x")  # a shadow mirror
    source = BuiltinSource(services.db)
    outcome = evaluate_all(services, source, now=T0 + 1)[0]
    checks = {c["name"]: c for c in outcome.report["checks"]}
    shown = checks["error_rate vs stable"]["compare"]
    assert (shown["candidate_n"], shown["stable_n"]) == (400, 400)
    assert (shown["candidate"], shown["stable"]) == (pytest.approx(0.1), 0.0)
    assert checks["error_rate vs stable"]["result"] in ("fail", "inconclusive")
    assert checks["p95_latency vs stable"]["compare"]["candidate"] == pytest.approx(0.3, abs=1e-4)  # 0.1 ms bins
    assert outcome.transition != "promote" and rollout_of(services).tier == 0
    stored = json.dumps(outcome.report)
    assert "vs stable" in stored


@pytest.mark.parametrize("database", ["sqlite", "postgres"])
def test_the_builtin_source_reads_sessions_and_cost_per_arm(database: str, request: pytest.FixtureRequest) -> None:
    services: Services = request.getfixturevalue("services" if database == "sqlite" else "postgres_services")
    rollout = place(services)
    ok, err = ("search_kb", "allow", "ok", 100.0), ("search_kb", "allow", "error", 300.0)
    for index in range(10):
        add_session(services, rollout, calls=[ok, err if index < 5 else ok], started_at=T0 + 0.1,
                    spend_micros=200_000)
        add_session(services, rollout, arm="stable", calls=[ok], started_at=T0 + 0.1, spend_micros=100_000)
    request = SignalRequest("bot", "v2", rollout.id or 0, 30.0, tier_started_at=T0, compare=True)
    batch = BuiltinSource(services.db).tier_signals([request], now=T0 + 1)
    found = batch.for_request(request)
    assert found is not None and found.arms is not None and batch.queries == 6
    candidate, stable = found.arms.candidate, found.arms.stable
    assert candidate.sessions == Moments.binary(5, 10) and stable.sessions == Moments.binary(0, 10)
    assert candidate.cost is not None and candidate.cost.mean == pytest.approx(0.2)
    assert stable.cost is not None and stable.cost.mean == pytest.approx(0.1)
    assert stable.cost.variance == pytest.approx(0, abs=1e-12)
    assert candidate.calls is not None and (candidate.calls.n, candidate.calls.total) == (20, 5)
    assert candidate.calls.variance >= Moments.binary(5, 20).variance  # sessions are the independent units
    assert candidate.latency is not None
    assert candidate.latency.n == 20
    outcome = evaluate_all(services, BuiltinSource(services.db), now=T0 + 1)[0]
    shown = {c["name"]: c for c in outcome.report["checks"]}["error_rate vs stable"]["compare"]
    assert (shown["candidate_n"], shown["stable_n"]) == (20, 10)


def test_a_memory_source_without_arms_holds(services: Services) -> None:
    place(services)
    source = InMemorySource({("bot", "v2"): TierSignals(sessions=50, tool_calls=500, errors=2, p95_latency_s=0.3,
                                                        spend_dollars=5.0)})
    outcome = evaluate_all(services, source, now=T0 + 1)[0]
    assert (outcome.result, outcome.transition) == ("hold", "hold")
    assert "error_rate vs stable" in outcome.report["reasons"][0]
