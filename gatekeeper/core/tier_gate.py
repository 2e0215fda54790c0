"""The tier gate of canary and expansion: the candidate's numbers over the gate window, and a comparison
with the stable arm when the policy asks for one (`gate.compare`).

Its checks and the action they decide follow core/gates.py, like the twin and shadow gates there.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

from gatekeeper.core.comparison import ArmEvidence, alpha_per_comparison, compare_metric, describe
from gatekeeper.core.gates import (
    Check,
    Comparison,
    Counters,
    GateReport,
    Limits,
    Soak,
    SourceStatus,
    Where,
    clean,
    decide,
    make_check,
    ratio,
)
from gatekeeper.core.policy import CompareSpec, ExtraQuery, TierGate


@dataclass(frozen=True)
class TierSignals:
    """A candidate's numbers over the gate window, as a metrics source reports them."""

    sessions: float | None = None
    tool_calls: float | None = None
    errors: float | None = None
    p95_latency_s: float | None = None
    spend_dollars: float | None = None
    overruns: float | None = None  # outcomes whose actual cost exceeded the reservation; None with calls: 0
    extra: Mapping[str, float | None] = field(default_factory=dict)
    extra_errors: Mapping[str, str] = field(default_factory=dict)
    notes: Mapping[str, str] = field(default_factory=dict)  # why a check has no data, by check name
    arms: ArmEvidence | None = None  # both arms since the tier began, when the gate compares them


def evaluate_tier_gate(gate: TierGate, signals: TierSignals | None, *, where: Where, tier_started_at: float,
                       counters: Counters, source: SourceStatus, now: float, tiers: int = 1) -> GateReport:
    """Judge a canary or expansion tier on its metrics, its comparison with stable, soak and extra queries.

    `tiers` is the number of canary and expansion tiers the comparisons' error budget is spread over.
    """
    if signals is None:
        source = replace(source, available=False) if source.available else source
        signals = TierSignals()
    values = tier_values(signals, traffic_percent=where.traffic_percent)
    # At 100% no stable arm is left to compare with: the last tier is judged on thresholds alone.
    comparable = gate.compare is not None and where.traffic_percent < 100
    compared = compare_checks(gate, signals.arms, source=source, tiers=tiers) if comparable else []
    checks = (*_tier_checks(gate, values, source), *compared, *_extra_checks(gate.queries, signals, source))
    soak = Soak(max(0.0, now - tier_started_at), gate.soak_s)
    limits = Limits(gate.failure_limit, gate.error_limit, gate.on_metrics_error)
    decision = decide(checks, evidence="sessions", soak=soak, counters=counters, limits=limits, source=source)
    return GateReport("tier", where, decision, now, checks, source, values, soak)


def tier_values(signals: TierSignals, *, traffic_percent: float) -> dict[str, float | None]:
    """Return the numbers the dashboard charts per evaluation."""
    return {"error_rate": ratio(signals.errors, signals.tool_calls),
            "p95_latency_s": clean(signals.p95_latency_s),
            "cost_per_session": ratio(signals.spend_dollars, signals.sessions),
            "overrun_rate": ratio(signals.overruns, signals.tool_calls),
            "sessions": clean(signals.sessions), "tool_calls": clean(signals.tool_calls),
            "traffic_percent": traffic_percent}


def _tier_checks(gate: TierGate, values: Mapping[str, float | None], source: SourceStatus) -> list[Check]:
    # The source's error is in the report once (its reasons and metrics_source), not again per check.
    error = None if source.available else "metrics unavailable"
    limits: list[tuple[str, float, Comparison]] = [
        ("sessions", gate.min_sessions, ">="), ("error_rate", gate.max_error_rate, "<="),
        ("p95_latency_s", gate.max_p95_latency_s, "<="),
        ("cost_per_session", gate.max_cost_per_session_micros / 1_000_000, "<="),
        ("overrun_rate", gate.max_overrun_rate, "<=")]
    return [make_check(name, values[name], threshold, comparison, error=error)
            for name, threshold, comparison in limits]


def compare_checks(gate: TierGate, arms: ArmEvidence | None, *, source: SourceStatus, tiers: int) -> list[Check]:
    """Compare the candidate with the stable arm, one check per metric of `gate.compare`.

    A comparison passes when the candidate is shown no worse than stable by more than its margin,
    fails when shown worse, and is inconclusive (a hold, never a promotion) in between.
    """
    spec = gate.compare
    if spec is None:
        return []
    error = None if source.available else (source.error or "metrics unavailable")
    alpha = alpha_per_comparison(spec.confidence, comparisons=len(spec.margins), tiers=tiers)
    return [_compare_check(spec, metric, margin, arms, alpha=alpha, planned=4.0 * gate.min_sessions, error=error)
            for metric, margin in spec.margins]


def _compare_check(spec: CompareSpec, metric: str, margin: float, arms: ArmEvidence | None, *, alpha: float,
                   planned: float, error: str | None) -> Check:
    name = f"{metric} vs stable"
    if error is not None:
        return Check(name, None, margin, "<=", "error", error)
    if arms is None:
        return Check(name, None, margin, "<=", "no_data", "no per-arm evidence")
    found = compare_metric(metric, arms, margin=margin, alpha=alpha, planned_sessions=planned)
    report = {**found.as_dict(), "confidence": spec.confidence, "alpha": alpha}
    return Check(name, clean(found.estimate), margin, "<=", found.result, describe(found), report)


def _extra_checks(queries: Sequence[ExtraQuery], signals: TierSignals, source: SourceStatus) -> list[Check]:
    checks = []
    for query in queries:
        error = signals.extra_errors.get(query.name) or (None if source.available else "metrics unavailable")
        value = signals.extra.get(query.name)
        bounds = [(b, c) for b, c in ((query.max, "<="), (query.min, ">=")) if b is not None]
        for bound, comparison in bounds:
            name = query.name if len(bounds) == 1 else f"{query.name} ({'max' if comparison == '<=' else 'min'})"
            check = make_check(name, value, bound, comparison, error=error)  # type: ignore[arg-type]
            note = signals.notes.get(query.name)
            checks.append(replace(check, detail=note) if note and check.result == "no_data" else check)
    return checks
