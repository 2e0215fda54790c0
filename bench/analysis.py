"""Canary-analysis benchmark: simulated rollouts judged every interval, `gate.compare` beside fixed thresholds.

Run: `python bench/analysis.py [--rollouts 200] [--seed 1] [--horizon 24h]`. It reads the shipped
`policies/support-default.yaml` (tiers, interval, window, soak, min_sessions, failure_limit) and
adds SPEC §10's `gate.compare` block. Live traffic arrives at the lowest rate at which the first
canary tier sees `min_sessions` candidate sessions in one window, about 10 calls per session; every
interval the real `core.tier_gate.evaluate_tier_gate` judges the tier, once with the comparison (both
arms since the tier began) and once with today's fixed thresholds only (the candidate over the
window), each on its own simulated rollout with the same random stream. Three scenarios:

- A/A: the candidate is the stable version (1% errors): false rollbacks should be <= 5%, and the
  median rollout should still complete.
- 2x errors: the candidate fails twice as often: rolled back before 100% in >= 95%.
- +30% latency at the same error rate: caught in >= 90%.
- and the issue's motivating case, 0.5% -> 1.5% errors, which passes the fixed 2% limit.

Latency is drawn per call into a fine histogram (as Prometheus would keep it), errors as binomial
counts, cost per session from a gamma law. "compare" is the gate with `gate.compare` added to
today's limits, "compare only" the comparison with the fixed limits lifted (what it catches by
itself), "fixed threshold" today's gate. A benchmark, not a test: it prints the volumes it used,
the rates and the medians, and never fails.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections import deque
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from scipy import stats

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from gatekeeper.core.comparison import ArmEvidence, ArmSample, Distribution, Moments  # noqa: E402
from gatekeeper.core.gates import Counters, SourceStatus, Where  # noqa: E402
from gatekeeper.core.policy import CompareSpec, Policy, TierGate, parse_duration  # noqa: E402
from gatekeeper.core.tier_gate import TierSignals, evaluate_tier_gate  # noqa: E402
from gatekeeper.gate_cycle import gated_tiers  # noqa: E402
from gatekeeper.policy_files import load_policy_file  # noqa: E402

COMPARE = CompareSpec(margins=(("error_rate", 0.5), ("p95_latency", 0.2), ("cost_per_session", 0.3)),
                      confidence=0.95)
CALLS_PER_SESSION = 10
BASE_ERROR = 0.01
LATENCY_MEDIAN_S, LATENCY_SIGMA = 0.3, 0.6
COST_SHAPE, COST_MEAN = 2.0, 0.05
EDGES = np.concatenate([np.geomspace(0.005, 30.0, 400), [math.inf]])  # histogram bucket bounds (le)
EDGES_TUPLE = tuple(EDGES.tolist())
SOURCE = SourceStatus("simulation")


@dataclass(frozen=True)
class Scenario:
    name: str
    error_factor: float = 1.0
    latency_factor: float = 1.0
    base_error: float = BASE_ERROR


SCENARIOS = (Scenario("A/A (same as stable)"), Scenario("2x error rate", error_factor=2.0),
             Scenario("+30% latency", latency_factor=1.3),
             Scenario("0.5% -> 1.5% errors", error_factor=3.0, base_error=0.005))


@dataclass
class Arm:
    """One arm's running totals since the tier began."""

    sessions: float = 0.0
    errored_sessions: float = 0.0
    calls: float = 0.0
    errors: float = 0.0
    cost: float = 0.0
    cost_sq: float = 0.0
    buckets: np.ndarray | None = None

    def add(self, other: Interval) -> None:
        self.sessions += other.sessions
        self.errored_sessions += other.errored_sessions
        self.calls += other.calls
        self.errors += other.errors
        self.cost += other.cost
        self.cost_sq += other.cost_sq
        self.buckets = other.buckets.copy() if self.buckets is None else self.buckets + other.buckets

    def sample(self) -> ArmSample:
        cumulative = np.cumsum(self.buckets) if self.buckets is not None else np.zeros(len(EDGES))
        return ArmSample(calls=Moments.binary(self.errors, self.calls),
                         sessions=Moments.binary(self.errored_sessions, self.sessions),
                         cost=Moments(self.sessions, self.cost, self.cost_sq),
                         latency=Distribution(EDGES_TUPLE, tuple(cumulative.tolist()), False))


@dataclass
class Interval:
    sessions: float
    errored_sessions: float
    calls: float
    errors: float
    cost: float
    cost_sq: float
    buckets: np.ndarray


class Traffic:
    """Draw one interval of one arm's traffic."""

    def __init__(self, rng: np.random.Generator, *, error_rate: float, latency_factor: float) -> None:
        self.rng = rng
        self.error_rate = error_rate
        cdf = stats.lognorm.cdf(EDGES, s=LATENCY_SIGMA, scale=LATENCY_MEDIAN_S * latency_factor)
        self.bucket_p = np.diff(np.concatenate([[0.0], cdf]))

    def draw(self, sessions: int) -> Interval:
        calls = sessions * CALLS_PER_SESSION
        errors = self.rng.binomial(calls, self.error_rate)
        session_error_p = 1 - (1 - self.error_rate) ** CALLS_PER_SESSION
        costs = self.rng.gamma(COST_SHAPE, COST_MEAN / COST_SHAPE, sessions)
        buckets = self.rng.multinomial(calls, self.bucket_p) if calls else np.zeros(len(EDGES), dtype=np.int64)
        return Interval(sessions, self.rng.binomial(sessions, session_error_p), calls, errors,
                        float(costs.sum()), float(np.square(costs).sum()), buckets)


@dataclass(frozen=True)
class Outcome:
    end: str  # completed | rolled_back | unfinished
    hours: float
    candidate_sessions: float  # until the end
    tier_label: str


def ladder(policy: Policy) -> list[tuple[str, float, TierGate]]:
    tier_steps = [("canary", t, policy.canary.gate) for t in policy.canary.tiers]
    return tier_steps + [("expansion", t, policy.expansion.gate) for t in policy.expansion.tiers]


def simulate(policy: Policy, scenario: Scenario, *, compare: bool, seed: int, rate: float, horizon_s: float,
             thresholds: bool = True) -> Outcome:
    """Walk one rollout up the ladder, judging every interval, until it completes, rolls back or runs out."""
    rng = np.random.default_rng(seed)
    stable = Traffic(rng, error_rate=scenario.base_error, latency_factor=1.0)
    candidate = Traffic(rng, error_rate=scenario.base_error * scenario.error_factor,
                        latency_factor=scenario.latency_factor)
    tier_steps = ladder(policy)
    tiers = gated_tiers(policy)
    now, total_candidate, index = 0.0, 0.0, 0
    while index < len(tier_steps):
        stage, percent, gate = tier_steps[index]
        gate = replace(gate, compare=COMPARE if compare else None)
        if not thresholds:  # the comparison alone: what it catches without today's fixed limits
            gate = replace(gate, max_error_rate=1.0, max_p95_latency_s=math.inf, max_cost_per_session_micros=10**12)
        arms = {"candidate": Arm(), "stable": Arm()}
        window: deque[Interval] = deque(maxlen=max(1, round(gate.window_s / gate.interval_s)))
        counters, started = Counters(), now
        while True:
            now += gate.interval_s
            if now > horizon_s:
                return Outcome("unfinished", now / 3600, total_candidate, f"{stage} {percent:g}%")
            arrivals = rng.poisson(rate * gate.interval_s)
            n_candidate = rng.binomial(arrivals, percent / 100)
            drawn = candidate.draw(n_candidate)
            arms["candidate"].add(drawn)
            arms["stable"].add(stable.draw(arrivals - n_candidate))
            window.append(drawn)
            total_candidate += n_candidate
            signals = windowed(window, arms if compare else None)
            report = evaluate_tier_gate(gate, signals, where=Where(stage, index, f"{stage} {percent:g}%", percent),
                                        tier_started_at=started, counters=counters, source=SOURCE, now=now,
                                        tiers=tiers)
            counters = report.decision.counters
            if report.action == "rollback":
                return Outcome("rolled_back", now / 3600, total_candidate, f"{stage} {percent:g}%")
            if report.action == "promote":
                index += 1
                break
    return Outcome("completed", now / 3600, total_candidate, "100%")


def windowed(window: deque[Interval], arms: dict[str, Arm] | None) -> TierSignals:
    """Return the candidate's numbers over the gate window, and both arms since the tier began."""
    sessions = sum(i.sessions for i in window)
    calls = sum(i.calls for i in window)
    buckets = np.sum([i.buckets for i in window], axis=0)
    p95 = Distribution(EDGES_TUPLE, tuple(np.cumsum(buckets).tolist()), False).quantile(0.95) \
        if calls else None
    evidence = ArmEvidence(arms["candidate"].sample(), arms["stable"].sample()) if arms else None
    return TierSignals(sessions=sessions, tool_calls=calls, errors=sum(i.errors for i in window),
                       p95_latency_s=p95, spend_dollars=sum(i.cost for i in window), arms=evidence)


def summary(outcomes: list[Outcome]) -> dict[str, float]:
    n = len(outcomes)
    rolled = [o for o in outcomes if o.end == "rolled_back"]
    done = [o for o in outcomes if o.end == "completed"]
    return {"rolled back": len(rolled) / n, "completed": len(done) / n,
            "unfinished": sum(o.end == "unfinished" for o in outcomes) / n,
            "median h to complete": float(np.median([o.hours for o in done])) if done else math.nan,
            "median h to rollback": float(np.median([o.hours for o in rolled])) if rolled else math.nan,
            "median cand. sessions to rollback": float(np.median([o.candidate_sessions for o in rolled]))
            if rolled else math.nan}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rollouts", type=int, default=200)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--horizon", default="24h", help="simulated time a rollout may take before it is cut")
    args = parser.parse_args()
    policy = load_policy_file(REPO / "policies" / "support-default.yaml")
    gate = policy.canary.gate
    first_tier = policy.canary.tiers[0]
    rate = gate.min_sessions / (gate.window_s * first_tier / 100)
    horizon_s = parse_duration(args.horizon)
    print(f"policy {policy.name}@{policy.revision}: tiers {list(policy.canary.tiers)} + "
          f"{list(policy.expansion.tiers)} %, interval {gate.interval_s:g}s, window {gate.window_s:g}s, "
          f"soak {gate.soak_s:g}s, min_sessions {gate.min_sessions}, failure_limit {gate.failure_limit}, "
          f"max_error_rate {gate.max_error_rate}, max_p95_latency {gate.max_p95_latency_s}s")
    print(f"compare: {dict(COMPARE.margins)} confidence {COMPARE.confidence}")
    print(f"volumes: {rate:.2f} live sessions/s ({rate * gate.interval_s:.0f} per interval), "
          f"{CALLS_PER_SESSION} calls per session; at {first_tier:g}% that is "
          f"{rate * gate.window_s * first_tier / 100:.0f} candidate sessions per window; stable errors "
          f"{BASE_ERROR:.1%}, latency lognormal median {LATENCY_MEDIAN_S}s sigma {LATENCY_SIGMA}, "
          f"cost per session gamma mean ${COST_MEAN}; horizon {args.horizon}; {args.rollouts} rollouts each")
    print()
    keys = ("rolled back", "completed", "unfinished", "median h to complete", "median h to rollback",
            "median cand. sessions to rollback")
    print(f"{'scenario':<22} {'gate':<16} " + " ".join(f"{k:>12}" for k in ("rolled back", "completed",
                                                                              "unfinished", "h complete",
                                                                              "h rollback", "sess. rollbk")))
    started = time.perf_counter()
    for scenario in SCENARIOS:
        for compare, thresholds, label in ((True, True, "compare"), (True, False, "compare only"),
                                           (False, True, "fixed threshold")):
            outcomes = [simulate(policy, scenario, compare=compare, seed=args.seed * 100_003 + i, rate=rate,
                                 horizon_s=horizon_s, thresholds=thresholds) for i in range(args.rollouts)]
            figures = summary(outcomes)
            cells = [f"{figures[k]:>12.1%}" if i < 3 else f"{figures[k]:>12,.1f}" for i, k in enumerate(keys)]
            print(f"{scenario.name:<22} {label:<16} " + " ".join(cells), flush=True)
    print(f"\n{time.perf_counter() - started:.0f}s of simulation")
    print("targets: A/A rolled back <= 5% with the median completing; 2x errors rolled back >= 95%; "
          "+30% latency rolled back >= 90%")


if __name__ == "__main__":
    main()
