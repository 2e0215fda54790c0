"""One gate evaluation cycle: judge every due rollout and act on its report.

For every active rollout that is progressing or held and whose policy interval is due, the
cycle gathers the stage's evidence (twin runs and mirrored sessions from the database; tier
numbers from the metrics source, every agent in one batch), asks the pure gates in
`core/gates.py` for a report, stores it as a GateEvaluation unique per (rollout, window key),
and acts on it in the same transaction through `rollouts.transition`:

- promote: one rung up, crossing stage boundaries; the last expansion tier completes.
- rollback: one rung down; the rollout pauses there until a person resumes it.
- hold: the state becomes held with the reasons; a held rollout is still evaluated and is
  released by itself once its cause clears (or promoted at once when everything passes).
- wait: nothing to do while the rollout soaks.

Two schedulers evaluating the same rollout in the same window collide on the unique key, and
the loser's transaction, effect included, is rolled back: each window acts at most once.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from gatekeeper.core import rollout as machine
from gatekeeper.core.agreement import MirroredPair, agreement
from gatekeeper.core.gates import (
    ALERT_HOLD_PREFIX,
    Counters,
    GateReport,
    Limits,
    ShadowSignals,
    SourceStatus,
    TwinRun,
    Where,
    evaluate_shadow_gate,
    evaluate_tier_gate,
    evaluate_twin_gate,
    next_transition,
)
from gatekeeper.core.policy import Policy, TierGate
from gatekeeper.core.trajectory import judge
from gatekeeper.errors import GatekeeperError, IllegalTransition, NotFound
from gatekeeper.policy_store import LoadedPolicy
from gatekeeper.rollouts import transition
from gatekeeper.services import Services
from gatekeeper.sources import MetricsSource, SignalBatch, SignalRequest
from gatekeeper.store import rollouts as store
from gatekeeper.store.models import Agent, AgentSession, Decision, GateEvaluation, Rollout

log = logging.getLogger(__name__)

ACTOR = "scheduler"
GATED_STATES = ("progressing", "held")
# Verdict reasons that mean "the policy refused this call": a shadowed call that would have got one
# of them, or a mirrored call that did, is a would-be violation.
VIOLATION_REASONS = frozenset({"cap_tool_calls", "cap_spend", "sequence_before", "sequence_max_calls"})
BUILTIN = SourceStatus("builtin")  # twin runs and mirrored sessions always come from the database


@dataclass(frozen=True)
class Due:
    """A rollout whose gate is due in this cycle, as read before any metrics are fetched."""

    agent: str
    rollout_id: int
    version: str
    stage: str
    tier: int
    tier_started_at: float
    loaded: LoadedPolicy
    window_key: str

    def signal_request(self) -> SignalRequest | None:
        """Return what the tier gate needs from the metrics source (nothing at twin and shadow)."""
        if self.stage not in ("canary", "expansion"):
            return None
        gate = gate_for(self.loaded.policy, self.stage)
        return SignalRequest(self.agent, self.version, self.rollout_id, gate.window_s, gate.queries,
                             tier_started_at=self.tier_started_at, compare=gate.compare is not None)


@dataclass(frozen=True)
class GateOutcome:
    """What one evaluation found and did."""

    agent: str
    rollout_id: int
    stage: str
    tier: int
    result: str
    transition: str | None
    report: dict[str, Any]


def evaluate_all(svc: Services, source: MetricsSource, *, now: float) -> list[GateOutcome]:
    """Run one cycle: evaluate every due rollout and act on its report."""
    due = due_rollouts(svc, now=now)
    requests = [r for item in due if (r := item.signal_request()) is not None]
    batch = source.tier_signals(requests, now=now) if requests else SignalBatch(SourceStatus(source.name))
    outcomes = [_evaluate_guarded(svc, item, batch, now=now) for item in due]
    return [outcome for outcome in outcomes if outcome is not None]


def gate_for(policy: Policy, stage: str) -> TierGate:
    """Return the tier gate of a stage; twin and shadow take interval and limits from the top-level gate."""
    if stage == "canary":
        return policy.canary.gate
    if stage == "expansion":
        return policy.expansion.gate
    return policy.gate


def window_key(rollout: Rollout, policy: Policy, *, now: float) -> str:
    """Return the key of the evaluation window `now` falls in, unique per rung visit and interval."""
    interval = max(gate_for(policy, rollout.stage).interval_s, 0.001)
    return f"{rollout.stage}:{rollout.tier}:{rollout.tier_started_at:.0f}:{int(now // interval)}"


def due_rollouts(svc: Services, *, now: float) -> list[Due]:
    """Return the active progressing or held rollouts not yet evaluated in their current window."""
    with svc.db.reading() as session:
        rows = session.exec(select(Agent, Rollout).join(Rollout, col(Rollout.id) == Agent.rollout_id)
                            .where(col(Rollout.state).in_(GATED_STATES))).all()
        candidates = [due for agent, rollout in rows if (due := _due(svc, agent, rollout, now=now))]
        done = _evaluated(session, candidates)
    return [due for due in candidates if (due.rollout_id, due.window_key) not in done]


def _due(svc: Services, agent: Agent, rollout: Rollout, *, now: float) -> Due | None:
    try:
        loaded = svc.policies.get(agent.policy)
    except NotFound:
        log.error("agent %s: policy %s is not loaded; its rollout is not evaluated", agent.name, agent.policy)
        return None
    if now < rollout.tier_started_at + gate_for(loaded.policy, rollout.stage).interval_s:
        return None  # a rung gets one whole interval before its first evaluation, never a same-cycle verdict
    return Due(agent.name, rollout.id or 0, rollout.candidate_version, rollout.stage, rollout.tier,
               rollout.tier_started_at, loaded, window_key(rollout, loaded.policy, now=now))


def _evaluated(session: Session, due: Sequence[Due]) -> set[tuple[int, str]]:
    if not due:
        return set()
    query = select(GateEvaluation.rollout_id, GateEvaluation.window_key).where(
        col(GateEvaluation.rollout_id).in_([d.rollout_id for d in due]),
        col(GateEvaluation.window_key).in_({d.window_key for d in due}))
    return {(rid, key) for rid, key in session.exec(query)}


def _evaluate_guarded(svc: Services, item: Due, batch: SignalBatch, *, now: float) -> GateOutcome | None:
    try:
        return evaluate_one(svc, item, batch, now=now)
    except IntegrityError:
        log.info("agent %s: window %s was evaluated by another scheduler", item.agent, item.window_key)
    except GatekeeperError as exc:
        log.error("agent %s: gate evaluation failed: %s", item.agent, exc.message)
    except Exception:  # noqa: BLE001 - one broken rollout must not stop the others' gates
        log.exception("agent %s: gate evaluation failed", item.agent)
    return None


def evaluate_one(svc: Services, item: Due, batch: SignalBatch, *, now: float) -> GateOutcome | None:
    """Evaluate one due rollout, store the report and act on it, all in one transaction."""
    with svc.db.transaction() as session:
        agent = store.get_agent(session, item.agent, for_update=True)
        rollout = store.current_rollout(session, agent, for_update=True)
        if rollout is None or not _unchanged(rollout, item):
            return None
        report = build_report(session, item, rollout, batch, now=now)
        evaluation = _store(session, item, agent, report)
        done = act(session, item.loaded, agent, rollout, report, now=now)
        stored = {**report.as_dict(), "transition": done}
        evaluation.report = json.dumps(stored, sort_keys=True)
        session.add(evaluation)
        return GateOutcome(item.agent, item.rollout_id, item.stage, item.tier, report.result, done, stored)


def _unchanged(rollout: Rollout, item: Due) -> bool:
    return (rollout.id == item.rollout_id and rollout.state in GATED_STATES and rollout.stage == item.stage
            and rollout.tier == item.tier and rollout.tier_started_at == item.tier_started_at)


def _store(session: Session, item: Due, agent: Agent, report: GateReport) -> GateEvaluation:
    evaluation = GateEvaluation(rollout_id=item.rollout_id, agent_id=agent.id or 0, at=report.evaluated_at,
                                stage=item.stage, tier=item.tier, window_key=item.window_key,
                                result=report.result, report=json.dumps(report.as_dict(), sort_keys=True),
                                policy_revision=item.loaded.revision)
    session.add(evaluation)
    session.flush()  # the unique (rollout, window) key fails here, before any effect
    return evaluation


def build_report(session: Session, item: Due, rollout: Rollout, batch: SignalBatch, *, now: float
                 ) -> GateReport:
    """Gather the stage's evidence and ask the stage's gate for a report."""
    policy = item.loaded.policy
    position = machine.Position(rollout.stage, rollout.tier)
    where = Where(rollout.stage, rollout.tier, machine.position_label(policy, position),
                  machine.traffic_percent(policy, position))
    counters = Counters(rollout.consecutive_failures, rollout.consecutive_errors)
    if rollout.stage == "twin":
        return evaluate_twin_gate(policy.twin.gate, twin_runs(session, rollout, policy),
                                  scenarios=list(policy.twin.scenarios), where=where, source=BUILTIN, now=now)
    if rollout.stage == "shadow":
        limits = Limits(policy.gate.failure_limit, policy.gate.error_limit, policy.gate.on_metrics_error)
        return evaluate_shadow_gate(policy.shadow.gate, shadow_signals(session, rollout), where=where,
                                    stage_started_at=rollout.tier_started_at, counters=counters,
                                    limits=limits, source=BUILTIN, now=now)
    request = item.signal_request()
    signals = batch.for_request(request) if request else None
    return evaluate_tier_gate(gate_for(policy, rollout.stage), signals, where=where,
                              tier_started_at=rollout.tier_started_at, counters=counters,
                              source=batch.status, now=now, tiers=gated_tiers(policy))


def gated_tiers(policy: Policy) -> int:
    """Return how many tiers compare arms (canary and expansion below 100%): `gate.compare` spends alpha over them."""
    return max(1, sum(tier < 100 for tier in (*policy.canary.tiers, *policy.expansion.tiers)))


def act(session: Session, loaded: LoadedPolicy, agent: Agent, rollout: Rollout, report: GateReport, *,
        now: float) -> str | None:
    """Carry out the report's decision on the rollout; return the transition taken, if any."""
    failures, errors = report.decision.counters.failures, report.decision.counters.errors
    rollout.consecutive_failures, rollout.consecutive_errors = failures, errors
    session.add(rollout)
    reason = _reason(report)
    action = next_transition(rollout.state, rollout.state_reason, report.action)
    if action is None:
        alert_held = rollout.state_reason.startswith(ALERT_HOLD_PREFIX)
        if report.action == "hold" and rollout.state == "held" and not alert_held:
            rollout.state_reason = reason  # still held, for the newest reasons
        return None
    try:
        transition(session, loaded, agent, rollout, action, actor=ACTOR, reason=reason, now=now,
                   metrics=report.as_dict())
    except IllegalTransition as exc:
        log.warning("agent %s: cannot %s: %s", agent.name, action, exc.message)
        return None
    return action


def _reason(report: GateReport) -> str:
    text = f"{report.gate} gate: " + "; ".join(report.decision.reasons)
    return text if len(text) <= 480 else text[:477] + "..."


# -- evidence from the database -------------------------------------------------------------


def twin_runs(session: Session, rollout: Rollout, policy: Policy) -> list[TwinRun]:
    """Return the finished twin runs of the candidate since it reached twin."""
    query = select(AgentSession).where(
        AgentSession.rollout_id == rollout.id, AgentSession.environment == "twin",
        AgentSession.arm == "candidate", col(AgentSession.ended_at).is_not(None),
        AgentSession.started_at >= rollout.tier_started_at)
    scenarios = policy.twin.scenarios
    return [TwinRun(run.scenario, _run_passed(session, run, policy), run.twin_snapshot_at)
            for run in session.exec(query) if not scenarios or run.scenario in scenarios]


def _run_passed(session: Session, run: AgentSession, policy: Policy) -> bool:
    if run.passed is not None:  # the hot path judged it when the session ended
        return run.passed
    scenario = policy.twin.scenarios.get(run.scenario or "")
    if scenario is None:
        return run.status == "ok"
    calls = [tool for tool, _ in _calls(session, [run.id]).get(run.id, [])]
    return run.status == "ok" and judge(calls, expect=scenario.expect, forbid=scenario.forbid).passed


def shadow_signals(session: Session, rollout: Rollout) -> ShadowSignals:
    """Return what the candidate's mirrored sessions did since the rollout reached shadow."""
    mirrors = list(session.exec(select(AgentSession).where(
        AgentSession.rollout_id == rollout.id, col(AgentSession.mirror_of).is_not(None),
        AgentSession.started_at >= rollout.tier_started_at)))
    decisions = list(session.exec(select(Decision).where(col(Decision.session_id).in_([m.id for m in mirrors]))))
    ended = [m for m in mirrors if m.ended_at is not None]
    agreeing, pairs = agreement(_pairs(session, ended))
    outcomes = [d for d in decisions if d.outcome_status is not None]
    return ShadowSignals(
        sessions=len(ended), calls=len(decisions), outcomes=len(outcomes),
        errors=sum(d.outcome_status == "error" for d in outcomes),
        violations=sum(d.would_verdict == "deny" or (d.verdict == "deny" and d.reason in VIOLATION_REASONS)
                       for d in decisions),
        pairs=pairs, agreeing_pairs=agreeing)


def _pairs(session: Session, mirrors: Sequence[AgentSession]) -> list[MirroredPair]:
    stable_ids = [m.mirror_of for m in mirrors if m.mirror_of]
    ended_stable = set(session.exec(select(AgentSession.id).where(
        col(AgentSession.id).in_(stable_ids), col(AgentSession.ended_at).is_not(None))))
    calls = _calls(session, [m.id for m in mirrors] + list(ended_stable))
    return [MirroredPair(calls.get(m.mirror_of or "", []), calls.get(m.id, []))
            for m in mirrors if m.mirror_of in ended_stable]


def _calls(session: Session, session_ids: Sequence[str]) -> dict[str, list[tuple[str, str]]]:
    query = (select(Decision.session_id, Decision.tool, Decision.tool_class)
             .where(col(Decision.session_id).in_(session_ids)).order_by(col(Decision.at), col(Decision.id)))
    out: dict[str, list[tuple[str, str]]] = {}
    for session_id, tool, tool_class in session.exec(query):
        out.setdefault(session_id, []).append((tool, tool_class))
    return out
