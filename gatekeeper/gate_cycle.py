"""One gate evaluation cycle: judge every due rollout and act on its report.

For every active rollout that is progressing or held and whose policy interval is due, the
cycle first gathers the stage's evidence (tier numbers from the metrics source, every agent in
one batch; twin runs and mirrored sessions from the database, in a read transaction: see
stage_evidence.py). Only then does it open the write transaction: lock the rollout, check the
tier visit is unchanged, ask the pure gates in `core/gates.py` for a report, store it as a
GateEvaluation unique per (rollout, window key), and act on it through `rollouts.transition`:

- promote: one tier up, crossing stage boundaries; the last expansion tier completes.
- rollback: one tier down; the rollout pauses there until a person resumes it.
- hold: the state becomes held with the reasons; a held rollout is still evaluated and is
  released by itself once its cause clears (or promoted at once when everything passes).
- wait: nothing to do while the rollout soaks.

Two schedulers evaluating the same rollout in the same window collide on the unique key, and
the loser's transaction, effect included, is rolled back: each window acts at most once.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from gatekeeper import stage_evidence
from gatekeeper.core import ladder
from gatekeeper.core.gates import (
    Counters,
    GateReport,
    Limits,
    ShadowSignals,
    SourceStatus,
    Where,
    evaluate_shadow_gate,
    evaluate_twin_gate,
    next_transition,
)
from gatekeeper.core.ladder import HoldOwner
from gatekeeper.core.policy import Policy, TierGate
from gatekeeper.core.tier_gate import evaluate_tier_gate
from gatekeeper.errors import GatekeeperError, IllegalTransition, NotFound
from gatekeeper.policy_store import LoadedPolicy
from gatekeeper.rollouts import transition
from gatekeeper.services import Services
from gatekeeper.stage_evidence import StageEvidence
from gatekeeper.store import evidence_records, rollout_records, scrape_records
from gatekeeper.store.models import Agent, GateEvaluation, Rollout
from gatekeeper.tier_signals import MetricsSource, SignalBatch, SignalRequest

log = logging.getLogger(__name__)

ACTOR = "scheduler"
GATED_STATES = ("progressing", "held")
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


def gather(svc: Services, item: Due) -> StageEvidence:
    """Read a due rollout's twin or shadow evidence from the database, before any write transaction."""
    return stage_evidence.gather(svc.db, item.loaded.policy, stage=item.stage, rollout_id=item.rollout_id,
                                 since=item.tier_started_at)


def gate_for(policy: Policy, stage: str) -> TierGate:
    """Return the tier gate of a stage; twin and shadow take interval and limits from the top-level gate."""
    if stage == "canary":
        return policy.canary.gate
    if stage == "expansion":
        return policy.expansion.gate
    return policy.gate


def window_key(rollout: Rollout, policy: Policy, *, now: float) -> str:
    """Return the key of the evaluation window `now` falls in, unique per tier visit and interval."""
    interval = max(gate_for(policy, rollout.stage).interval_s, 0.001)
    return f"{rollout.stage}:{rollout.tier}:{rollout.tier_started_at:.0f}:{int(now // interval)}"


def due_rollouts(svc: Services, *, now: float) -> list[Due]:
    """Return the active progressing or held rollouts not yet evaluated in their current window."""
    with svc.db.reading() as db:
        rows = evidence_records.gated_rollouts(db=db, states=GATED_STATES)
        candidates = [due for agent, rollout in rows if (due := _due(svc, agent, rollout, now=now))]
        done = (evidence_records.evaluated_windows([d.rollout_id for d in candidates],
                                                   [d.window_key for d in candidates], db=db)
                if candidates else set())
    return [due for due in candidates if (due.rollout_id, due.window_key) not in done]


def _due(svc: Services, agent: Agent, rollout: Rollout, *, now: float) -> Due | None:
    try:
        loaded = svc.policies.get(agent.policy)
    except NotFound:
        log.error("agent %s: policy %s is not loaded; its rollout is not evaluated", agent.name, agent.policy)
        return None
    if now < rollout.tier_started_at + gate_for(loaded.policy, rollout.stage).interval_s:
        return None  # a tier gets one whole interval before its first evaluation, never a same-cycle verdict
    return Due(agent.name, rollout.id or 0, rollout.candidate_version, rollout.stage, rollout.tier,
               rollout.tier_started_at, loaded, window_key(rollout, loaded.policy, now=now))


def _evaluate_guarded(svc: Services, item: Due, batch: SignalBatch, *, now: float) -> GateOutcome | None:
    try:
        return evaluate_one(svc, item, batch, gather(svc, item), now=now)
    except IntegrityError:
        log.info("agent %s: window %s was evaluated by another scheduler", item.agent, item.window_key)
    except GatekeeperError as exc:
        log.error("agent %s: gate evaluation failed: %s", item.agent, exc.message)
    except Exception:  # noqa: BLE001 - one broken rollout must not stop the others' gates
        log.exception("agent %s: gate evaluation failed", item.agent)
    return None


def evaluate_one(svc: Services, item: Due, batch: SignalBatch, evidence: StageEvidence, *, now: float
                 ) -> GateOutcome | None:
    """Lock one due rollout, judge it on the gathered evidence, store the report and act, in one transaction."""
    with svc.db.transaction() as db:
        agent = rollout_records.get_agent(db, item.agent, for_update=True)
        rollout = rollout_records.current_rollout(db, agent, for_update=True)
        if rollout is None or not _unchanged(rollout, item):
            return None  # the tier visit the evidence is about is over
        report = build_report(item, rollout, batch, evidence, now=now)
        evaluation = _store(db, item, agent, report)
        done = act(db, item.loaded, agent, rollout, report, now=now)
        stored = {**report.as_dict(), "transition": done}
        evaluation.report = json.dumps(stored, sort_keys=True)
        db.add(evaluation)
        return GateOutcome(item.agent, item.rollout_id, item.stage, item.tier, report.result, done, stored)


def _unchanged(rollout: Rollout, item: Due) -> bool:
    return (rollout.id == item.rollout_id and rollout.state in GATED_STATES and rollout.stage == item.stage
            and rollout.tier == item.tier and rollout.tier_started_at == item.tier_started_at)


def _store(db: Session, item: Due, agent: Agent, report: GateReport) -> GateEvaluation:
    evaluation = GateEvaluation(rollout_id=item.rollout_id, agent_id=agent.id or 0, at=report.evaluated_at,
                                stage=item.stage, tier=item.tier, window_key=item.window_key,
                                result=report.result, report=json.dumps(report.as_dict(), sort_keys=True),
                                policy_revision=item.loaded.revision)
    db.add(evaluation)
    db.flush()  # the unique (rollout, window) key fails here, before any effect
    scrape_records.count_evaluations([(evaluation.agent_id, evaluation.result)], db=db)
    return evaluation


def build_report(item: Due, rollout: Rollout, batch: SignalBatch, evidence: StageEvidence, *, now: float
                 ) -> GateReport:
    """Ask the stage's gate for a report on the gathered evidence."""
    policy = item.loaded.policy
    position = ladder.Position(rollout.stage, rollout.tier)
    where = Where(rollout.stage, rollout.tier, ladder.position_label(policy, position),
                  ladder.traffic_percent(policy, position))
    counters = Counters(rollout.consecutive_failures, rollout.consecutive_errors)
    if rollout.stage == "twin":
        return evaluate_twin_gate(policy.twin.gate, list(evidence.twin_runs),
                                  scenarios=list(policy.twin.scenarios), where=where, source=BUILTIN, now=now)
    if rollout.stage == "shadow":
        limits = Limits(policy.gate.failure_limit, policy.gate.error_limit, policy.gate.on_metrics_error)
        return evaluate_shadow_gate(policy.shadow.gate, evidence.shadow or ShadowSignals(), where=where,
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


def act(db: Session, loaded: LoadedPolicy, agent: Agent, rollout: Rollout, report: GateReport, *,
        now: float) -> str | None:
    """Carry out the report's decision on the rollout; return the transition taken, if any."""
    failures, errors = report.decision.counters.failures, report.decision.counters.errors
    rollout.consecutive_failures, rollout.consecutive_errors = failures, errors
    db.add(rollout)
    reason = _reason(report)
    action = next_transition(rollout.state, rollout.held_by, report.action)
    owner: HoldOwner = "gate" if report.source.available else "outage"
    if action is None:
        if report.action == "hold" and rollout.state == "held" and rollout.held_by != "alert":
            rollout.state_reason, rollout.held_by = reason, owner  # still held, for the newest reasons
        return None
    try:
        transition(db, loaded, agent, rollout, action, actor=ACTOR, reason=reason, now=now,
                   metrics=report.as_dict(), held_by=owner)
    except IllegalTransition as exc:
        log.warning("agent %s: cannot %s: %s", agent.name, action, exc.message)
        return None
    return action


def _reason(report: GateReport) -> str:
    text = f"{report.gate} gate: " + "; ".join(report.decision.reasons)
    return text if len(text) <= 480 else text[:477] + "..."
