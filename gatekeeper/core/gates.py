"""Gate evaluation: the checks every gate shares, the action they decide, the twin and shadow gates.

The tier gate of canary and expansion is in core/tier_gate.py, built on the same checks.

Each check compares one value with one threshold and has one of four results, kept apart
the way Argo Rollouts keeps its measurement phases apart:

- pass: the value is there and within its threshold.
- fail: the value is there and outside its threshold. With enough evidence it counts toward
  `failure_limit`; without enough evidence (too few sessions or runs) it only holds.
- no_data: there is no value, or it is NaN. It never promotes; the gate holds.
- inconclusive: a comparison with the stable arm (`gate.compare`, see core/comparison.py) cannot
  yet tell the candidate apart from the margin either way. It never promotes; the gate holds.
- error: the metrics source could not answer. It counts toward `error_limit`, after which
  `on_metrics_error` decides between holding and rolling back.

A gate decides one action, and its report carries a result for people:

| action   | result   | when                                                                   |
|----------|----------|------------------------------------------------------------------------|
| promote  | promote  | every check passed and the soak time is over                           |
| wait     | hold     | nothing is wrong but the soak time is not over (state stays progressing)|
| hold     | hold     | a check failed, has no data, or evidence is too thin                   |
| hold     | error    | the metrics source failed, below error_limit or on_metrics_error: hold |
| rollback | rollback | failure_limit failed evaluations (or error_limit errors) in a row     |
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

from gatekeeper.core.fidelity import Fidelity, unfaithful_reason
from gatekeeper.core.policy import ShadowGate, TwinGate

CheckResult = Literal["pass", "fail", "no_data", "error", "inconclusive"]
GateResult = Literal["promote", "hold", "rollback", "error"]
Action = Literal["promote", "wait", "hold", "rollback"]
Comparison = Literal["<=", ">="]


@dataclass(frozen=True)
class Check:
    """One gate check: a value against a threshold, and its result."""

    name: str
    value: float | None
    threshold: float | None
    comparison: Comparison
    result: CheckResult
    detail: str = ""
    compare: Mapping[str, Any] | None = None  # a comparison with stable: estimate, interval, both arms

    def as_dict(self) -> dict[str, Any]:
        """Return the check as the gate report shows it."""
        out = {"name": self.name, "value": self.value, "threshold": self.threshold,
               "comparison": self.comparison, "result": self.result, "detail": self.detail}
        return {**out, "compare": dict(self.compare)} if self.compare is not None else out


def clean(value: float | None) -> float | None:
    """Return the value, or None when it is missing, NaN or infinite."""
    if value is None or not math.isfinite(value):
        return None
    return float(value)


def assess(value: float | None, threshold: float, comparison: Comparison) -> CheckResult:
    """Return pass, fail or no_data for a value against a threshold."""
    value = clean(value)
    if value is None:
        return "no_data"
    within = value <= threshold if comparison == "<=" else value >= threshold
    return "pass" if within else "fail"


def make_check(name: str, value: float | None, threshold: float, comparison: Comparison, *,
               error: str | None = None) -> Check:
    """Build a check, with a detail a person can read in the report."""
    if error is not None:
        return Check(name, None, threshold, comparison, "error", error)
    result = assess(value, threshold, comparison)
    if result == "no_data":
        return Check(name, None, threshold, comparison, result, "no data")
    broken = {"<=": ">", ">=": "<"}[comparison]
    sign = comparison if result == "pass" else broken
    return Check(name, clean(value), threshold, comparison, result, f"{value:.4g} {sign} {threshold:.4g}")


def ratio(part: float | None, whole: float | None) -> float | None:
    """Return part / whole, or None when the whole is missing or zero (no data, not zero)."""
    part, whole = clean(part), clean(whole)
    if whole is None or whole <= 0:
        return None
    return (part or 0.0) / whole


@dataclass(frozen=True)
class SourceStatus:
    """Whether the metrics source answered, and since when it has not."""

    name: str
    available: bool = True
    unavailable_since: float | None = None
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """Return the status as the gate report shows it."""
        return {"name": self.name, "available": self.available,
                "unavailable_since": self.unavailable_since, "error": self.error}


@dataclass(frozen=True)
class Counters:
    """Consecutive failed and errored evaluations at the current tier."""

    failures: int = 0
    errors: int = 0


@dataclass(frozen=True)
class Limits:
    """When failures and errors turn into a rollback; failure_limit None never rolls back."""

    failure_limit: int | None
    error_limit: int
    on_metrics_error: str = "hold"


@dataclass(frozen=True)
class Where:
    """The tier being judged."""

    stage: str
    tier: int
    tier_label: str
    traffic_percent: float = 0.0


@dataclass(frozen=True)
class Soak:
    elapsed_s: float
    required_s: float

    @property
    def done(self) -> bool:
        return self.elapsed_s >= self.required_s


@dataclass(frozen=True)
class GateDecision:
    """What a gate decided, why, and the counters after this evaluation."""

    result: GateResult
    action: Action
    reasons: tuple[str, ...]
    counters: Counters


@dataclass(frozen=True)
class GateReport:
    """One gate evaluation: every check, the decision and the numbers behind it."""

    gate: str
    where: Where
    decision: GateDecision
    evaluated_at: float
    checks: tuple[Check, ...]
    source: SourceStatus
    values: Mapping[str, float | None]
    soak: Soak | None = None
    extra: Mapping[str, Any] | None = None  # the twin gate's fidelity and known differences

    @property
    def result(self) -> GateResult:
        return self.decision.result

    @property
    def action(self) -> Action:
        return self.decision.action

    def as_dict(self) -> dict[str, Any]:
        """Return the report in the shape stored in GateEvaluation.report and shown by the API."""
        soak = {"elapsed_s": self.soak.elapsed_s, "required_s": self.soak.required_s} if self.soak else None
        return {"gate": self.gate, "stage": self.where.stage, "tier": self.where.tier,
                "tier_label": self.where.tier_label, "result": self.result,
                "reasons": list(self.decision.reasons), "evaluated_at": self.evaluated_at,
                "checks": [c.as_dict() for c in self.checks], "soak": soak,
                "metrics_source": self.source.as_dict(),
                "values": {k: clean(v) for k, v in self.values.items()},
                "consecutive": {"failures": self.decision.counters.failures,
                                "errors": self.decision.counters.errors}, **(self.extra or {})}


# -- the decision shared by every gate ------------------------------------------------------


def decide(checks: Sequence[Check], *, evidence: str, soak: Soak | None, counters: Counters,
           limits: Limits, source: SourceStatus) -> GateDecision:
    """Turn check results into an action; `evidence` names the check that says there is enough data."""
    errored = [c for c in checks if c.result == "error"]
    if not source.available or errored:
        return _on_error(errored, counters=counters, limits=limits, source=source)
    enough = all(c.result == "pass" for c in checks if c.name == evidence)
    failed = [c for c in checks if c.result == "fail" and c.name != evidence]
    if failed and enough:
        return _on_failure(failed, counters=counters, limits=limits)
    quiet = Counters(failures=counters.failures if failed else 0, errors=0)
    problems = [_problem(c, evidence=evidence, enough=enough) for c in checks if c.result != "pass"]
    if problems:
        return GateDecision("hold", "hold", tuple(problems), quiet)
    if soak is not None and not soak.done:
        return GateDecision("hold", "wait", (f"soaking: {soak.elapsed_s:.0f}s of {soak.required_s:.0f}s",), quiet)
    return GateDecision("promote", "promote", ("every check passed",), quiet)


def _on_error(errored: Sequence[Check], *, counters: Counters, limits: Limits, source: SourceStatus
              ) -> GateDecision:
    errors = counters.errors + 1
    after = replace(counters, errors=errors)
    reasons = [f"metrics unavailable ({source.name}): {source.error or 'no answer'}"] if not source.available \
        else [f"{c.name}: {c.detail}" for c in errored]
    count = f"{errors} consecutive metrics errors (error_limit {limits.error_limit})"
    if errors >= limits.error_limit and limits.on_metrics_error == "rollback":
        return GateDecision("rollback", "rollback", (*reasons, count, "on_metrics_error: rollback"), after)
    return GateDecision("error", "hold", (*reasons, count), after)


def _on_failure(failed: Sequence[Check], *, counters: Counters, limits: Limits) -> GateDecision:
    failures = counters.failures + 1
    after = Counters(failures=failures, errors=0)
    reasons = [f"{c.name} failed: {c.detail}" for c in failed]
    if limits.failure_limit is None:
        return GateDecision("hold", "hold", tuple(reasons), after)
    count = f"{failures} consecutive failed evaluations (failure_limit {limits.failure_limit})"
    if failures >= limits.failure_limit:
        return GateDecision("rollback", "rollback", (*reasons, count), after)
    return GateDecision("hold", "hold", (*reasons, count), after)


def _problem(check: Check, *, evidence: str, enough: bool) -> str:
    if check.name == evidence:
        return f"too few {check.name}: {check.detail}"
    if check.result == "no_data":
        extra = "" if check.detail == "no data" else f": {check.detail}"
        return f"no data for {check.name}{extra}"
    if check.result == "fail" and not enough:
        return f"{check.name} {check.detail} (not yet counted: too little evidence)"
    if check.result == "inconclusive":
        return f"{check.name} inconclusive: {check.detail}"
    return f"{check.name}: {check.detail}"


def next_transition(state: str, held_by: str | None, action: Action) -> str | None:
    """Return the rollout action that carries out a gate's decision in this state, if any.

    A held rollout is released once its cause clears, or promoted at once when everything
    passes; a hold set by an alert stays until the alert resolves, though a rollback still wins.
    """
    if action == "rollback":
        return "rollback"
    if state == "held" and held_by == "alert":
        return None
    if action == "promote":
        return "promote"
    if action == "hold":
        return "hold" if state == "progressing" else None
    return "release" if state == "held" else None


# -- shadow gate ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ShadowSignals:
    """What the mirrored candidate sessions of one shadow stage did."""

    sessions: int = 0
    calls: int = 0
    outcomes: int = 0
    errors: int = 0
    violations: int = 0
    pairs: int = 0
    agreeing_pairs: int = 0


def evaluate_shadow_gate(gate: ShadowGate, signals: ShadowSignals, *, where: Where, stage_started_at: float,
                         counters: Counters, limits: Limits, source: SourceStatus, now: float) -> GateReport:
    """Judge the shadow stage: enough mirrored sessions, few errors and would-be violations, agreement."""
    values = {"sessions": float(signals.sessions), "error_rate": ratio(signals.errors, signals.outcomes),
              "violation_rate": ratio(signals.violations, signals.calls),
              "agreement": ratio(signals.agreeing_pairs, signals.pairs), "traffic_percent": where.traffic_percent}
    checks = (make_check("sessions", values["sessions"], gate.min_sessions, ">="),
              make_check("error_rate", values["error_rate"], gate.max_error_rate, "<="),
              make_check("violation_rate", values["violation_rate"], gate.max_violation_rate, "<="),
              make_check("agreement", values["agreement"], gate.min_agreement, ">="))
    soak = Soak(max(0.0, now - stage_started_at), gate.soak_s)
    decision = decide(checks, evidence="sessions", soak=soak, counters=counters, limits=limits, source=source)
    return GateReport("shadow", where, decision, now, checks, source, values, soak)


# -- twin gate ------------------------------------------------------------------------------


@dataclass(frozen=True)
class TwinRun:
    """One finished twin session: its scenario, whether it passed, and its twin snapshot time."""

    scenario: str | None
    passed: bool
    snapshot_at: float | None = None


def evaluate_twin_gate(gate: TwinGate, runs: Sequence[TwinRun], *, scenarios: Sequence[str], where: Where,
                       source: SourceStatus, now: float, fidelity: Fidelity | None = None,
                       differences: Sequence[Mapping[str, str]] = ()) -> GateReport:
    """Judge the twin stage: enough runs, their pass rate, every scenario covered, a fresh snapshot, fidelity."""
    covered = {run.scenario for run in runs if run.scenario in scenarios}
    snapshots = [run.snapshot_at for run in runs if run.snapshot_at is not None]
    age = now - max(snapshots) if snapshots else None
    values = {"runs": float(len(runs)), "pass_rate": ratio(sum(r.passed for r in runs), len(runs)),
              "scenarios_covered": float(len(covered)), "twin_snapshot_age_s": age, "traffic_percent": 0.0}
    checks = [make_check("runs", values["runs"], gate.min_runs, ">="),
              make_check("pass_rate", values["pass_rate"], gate.min_pass_rate, ">="),
              _coverage_check(scenarios, covered), _snapshot_check(gate, age, has_runs=bool(runs))]
    fidelity = fidelity or Fidelity(0, 0)
    values["fidelity"], values["replays"] = fidelity.value, float(fidelity.replays)
    if gate.min_fidelity is not None:
        checks += _fidelity_checks(gate, fidelity)
    decision = decide(checks, evidence="runs", soak=None, counters=Counters(),
                      limits=Limits(None, 1), source=source)
    # Too few replays is evidence still coming, said once: not "no data" for fidelity too.
    reasons = [r.replace("no data for replays: ", "too few replays: ", 1) for r in decision.reasons
               if not r.startswith("no data for fidelity")]
    if any(c.name == "fidelity" and c.result == "fail" for c in checks):
        reasons = [unfaithful_reason(fidelity, threshold=gate.min_fidelity or 0.0) if r.startswith("fidelity ")
                   else r for r in reasons]
    decision = replace(decision, reasons=tuple(reasons))
    extra = {"fidelity": {"value": fidelity.value, "replays": fidelity.replays, "faithful": fidelity.faithful,
                          "diverging": [{"scenario": n, "detail": d} for n, d in fidelity.diverging]},
             "differences": [dict(d) for d in differences]}
    return GateReport("twin", where, decision, now, tuple(checks), source, values, extra=extra)


def _fidelity_checks(gate: TwinGate, fidelity: Fidelity) -> list[Check]:
    """Enough stable replays, then their share of faithful ones; too few only holds, never says unfaithful."""
    replays = make_check("replays", float(fidelity.replays), gate.min_replays, ">=")
    check = make_check("fidelity", fidelity.value, gate.min_fidelity or 0.0, ">=")
    if replays.result != "pass":
        replays = replace(replays, result="no_data", detail=f"{fidelity.replays} of {gate.min_replays} stable "
                                                            "replays of recorded scenarios")
        if check.result == "fail":
            check = replace(check, result="no_data", detail=f"{check.detail}, too few replays to judge")
    return [replays, check]


def _coverage_check(scenarios: Sequence[str], covered: set[str | None]) -> Check:
    missing = [name for name in scenarios if name not in covered]
    check = make_check("scenarios_covered", float(len(scenarios) - len(missing)), len(scenarios), ">=")
    return replace(check, detail=f"no run of {', '.join(missing)}") if missing else check


def _snapshot_check(gate: TwinGate, age: float | None, *, has_runs: bool) -> Check:
    check = make_check("twin_snapshot_age_s", age, gate.max_twin_age_s, "<=")
    if age is None and has_runs:
        return replace(check, detail="no twin snapshot reported: send twin_snapshot_at when starting twin "
                                     "sessions")
    return check
