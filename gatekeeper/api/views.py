"""Turn table rows into the API's response models (shared by the API and the dashboard)."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlmodel import Session

from gatekeeper.api.schemas import AgentStatus, HistoryEntry, RolloutView, TierView, timestamp, utc
from gatekeeper.api.session_views import trace_verdict
from gatekeeper.api.trace_schemas import MirroredTraces, SessionTrace, Trace, TraceDecision, TraceOutcome, TraceSession
from gatekeeper.core import ladder
from gatekeeper.core.budgets import to_dollars
from gatekeeper.core.policy import Policy
from gatekeeper.core.vocabulary import PREVIEW_STAGES
from gatekeeper.errors import NotFound
from gatekeeper.policy_store import LoadedPolicy, PolicyStore
from gatekeeper.rollouts import status_of
from gatekeeper.store import reads, rollout_records
from gatekeeper.store.models import Agent, AgentSession, Decision, GateEvaluation, Rollout, Transition

SESSION_ID = re.compile(r"[A-Za-z0-9_-]{1,40}")


def describe_agent(db: Session, policies: PolicyStore, agent: Agent, *, now: float) -> AgentStatus:
    """Return an agent's status: rollout, ladder, allowed actions, current gate report."""
    loaded = _policy_or_none(policies, agent.policy)
    rollout = rollout_records.current_rollout(agent, db=db) or rollout_records.latest_rollout(agent, db=db)
    active = rollout is not None and rollout.id == agent.rollout_id
    reported = gate_report(db, rollout) if rollout and active else None
    # Not yet marked expired is not waiting either: the count agrees with the lists the pages show.
    pending = reads.pending_count(agent.id or 0, now=now, db=db)
    return AgentStatus(
        name=agent.name, policy=agent.policy, stable_version=agent.stable_version,
        policy_revision=loaded.revision if loaded else None, policy_file=loaded.path if loaded else None,
        rollout=rollout_view(rollout, loaded) if rollout else None,
        ladder=[ladder.tier_label(loaded.policy, t) for t in ladder.ladder(loaded.policy)] if loaded else [],
        allowed_actions=list(ladder.allowed_actions(status_of(rollout))) if rollout and active else [],
        gate_report=reported.current if reported else None,
        pending_approvals=int(pending))


@dataclass(frozen=True)
class ReportState:
    """The newest gate report of a rollout: current, or superseded by a transition since (then `current` is None)."""

    newest: dict[str, Any] | None
    superseded_by: Transition | None
    stale: bool

    @property
    def current(self) -> dict[str, Any] | None:
        return None if self.stale else self.newest


def gate_report(db: Session, rollout: Rollout) -> ReportState:
    """Return the rollout's newest gate report and whether a transition since (or a move) superseded it."""
    evaluation = rollout_records.latest_evaluation(rollout.id, db=db) if rollout.id else None
    if evaluation is None:
        return ReportState(None, None, False)
    report = json.loads(evaluation.report)
    report = report if isinstance(report, dict) else {}
    # >=: the scheduler writes a promotion at the very time of the evaluation that caused it.
    later = reads.superseding_transition(rollout.id or 0, after=evaluation.at - 1e-6, db=db)
    moved = (evaluation.stage, evaluation.tier) != (rollout.stage, rollout.tier)
    return ReportState(report, later, later is not None or moved)


def tier_name(policy: Policy | None, stage: str | None, *, tier: int | None) -> str:
    """Return a tier as every view names it (`canary 25%`); the raw stage and tier if the policy changed."""
    if stage is None:
        return "—"
    if policy is None:
        return stage if stage in PREVIEW_STAGES else f"{stage} tier {tier}"
    try:
        return ladder.tier_label(policy, ladder.Tier(stage, tier or 0))
    except (IndexError, ValueError):
        return f"{stage} tier {tier}"


def rollout_view(rollout: Rollout, loaded: LoadedPolicy | None) -> RolloutView:
    """Return the API view of a rollout row."""
    here = status_of(rollout).current_tier
    policy = loaded.policy if loaded else None
    return RolloutView(
        id=rollout.id or 0, candidate_version=rollout.candidate_version, stable_version=rollout.stable_version,
        stage=rollout.stage, tier=rollout.tier, state=rollout.state, state_reason=rollout.state_reason,
        tier_label=ladder.tier_label(policy, here) if policy else rollout.stage,
        traffic_percent=ladder.traffic_percent(policy, here) if policy else 0.0,
        tier_started_at=utc(rollout.tier_started_at), started_at=utc(rollout.started_at),
        updated_at=utc(rollout.updated_at), ended_at=timestamp(rollout.ended_at),
        kill_switch_open=rollout.kill_switch_open, policy_revision=rollout.policy_revision)


def history_entries(db: Session, policies: PolicyStore, agent: Agent,
                    rows: Sequence[Transition | GateEvaluation]) -> list[HistoryEntry]:
    """Return the API view of history rows, tiers named by the agent's policy, with their candidate."""
    loaded = _policy_or_none(policies, agent.policy)
    versions = reads.candidate_versions([row.rollout_id for row in rows], db=db)
    return [history_entry(row, policy=loaded.policy if loaded else None,
                          candidate_version=versions.get(row.rollout_id)) for row in rows]


def history_entry(entry: Transition | GateEvaluation, *, policy: Policy | None = None,
                  candidate_version: str | None = None) -> HistoryEntry:
    """Return the API view of a transition or a gate evaluation."""
    def where(stage: str | None, tier: int | None, state: str | None) -> TierView:
        return TierView(stage=stage, tier=tier, state=state, label=tier_name(policy, stage, tier=tier))

    if isinstance(entry, Transition):
        return HistoryEntry.model_validate({
            "kind": "transition", "id": entry.id, "rollout_id": entry.rollout_id, "at": timestamp(entry.at),
            "actor": entry.actor, "action": entry.action, "reason": entry.reason,
            "from": where(entry.from_stage, entry.from_tier, entry.from_state) if entry.from_stage else None,
            "to": where(entry.to_stage, entry.to_tier, entry.to_state),
            "traffic_percent": entry.traffic_percent, "policy_revision": entry.policy_revision,
            "metrics": rollout_records.metrics_of(entry), "candidate_version": candidate_version})
    report = rollout_records.metrics_of(entry)
    here = where(entry.stage, entry.tier, None)
    return HistoryEntry.model_validate({
        "kind": "gate_evaluation", "id": entry.id, "rollout_id": entry.rollout_id, "at": timestamp(entry.at),
        "actor": "scheduler", "action": f"gate:{entry.result}", "reason": "; ".join(report.get("reasons", [])),
        "from": here, "to": here, "policy_revision": entry.policy_revision, "metrics": report,
        "candidate_version": candidate_version})


def agent_or_404(db: Session, name: str) -> Agent:
    """Return the agent called `name` or raise NotFound (for path parameters)."""
    try:
        return rollout_records.get_agent(name, db=db)
    except NotFound:
        raise NotFound(f"no agent named {name!r}") from None


def _policy_or_none(policies: PolicyStore, name: str) -> LoadedPolicy | None:
    try:
        return policies.get(name)
    except NotFound:
        return None


def session_trace(db: Session, session_id: str, *, policies: PolicyStore | None = None) -> SessionTrace:
    """Return a session's trace, and both halves side by side when it is half of a mirrored pair.

    With `policies`, an ended twin run also carries its verdict (api/session_views.py).
    """
    if not SESSION_ID.fullmatch(session_id):  # never sent to the database: NUL or 10 kB ids are just unknown
        raise NotFound(f"no session {session_id[:60]!r}", field="session_id")
    row = reads.traced_session(session_id, db=db)
    agent = reads.agent_name(row.agent_id, db=db)
    decisions = reads.session_decisions(row.id, db=db)
    own = _trace(db, row, agent, decisions=decisions)
    verdict = None
    if policies is not None:
        verdict = trace_verdict(db, policies, row, decisions)
    other = reads.paired_session(row, db=db)
    if other is None:
        return SessionTrace(session=own.session, decisions=own.decisions, verdict=verdict)
    pair = (own, _trace(db, other, agent))
    stable, candidate = pair if row.mirror_of is None else pair[::-1]
    return SessionTrace(session=own.session, decisions=own.decisions,
                        mirror=MirroredTraces(stable=stable, candidate=candidate), verdict=verdict)


def arguments_of(text: str | None) -> dict[str, Any] | None:
    """Return stored (already redacted) arguments as an object; None when absent or unreadable."""
    if not text:
        return None
    try:
        loaded = json.loads(text)
    except ValueError:
        return None
    return loaded if isinstance(loaded, dict) else {"value": loaded}


def session_facts(row: AgentSession, agent: str) -> TraceSession:
    """Return the API view of a session row: its facts, counters and caps (a trace's head, a listing's row)."""
    return TraceSession(
        session_id=row.id, agent=agent, version=row.version, arm=row.arm, stage=row.stage,
        environment=row.environment, scenario=row.scenario, status=row.status, passed=row.passed,
        tool_calls=row.tool_calls, spend=to_dollars(row.spend_micros), cap_tool_calls=row.cap_tool_calls,
        cap_spend=to_dollars(row.cap_spend_micros), started_at=utc(row.started_at),
        ended_at=timestamp(row.ended_at), mirror_of=row.mirror_of)


def _trace(db: Session, row: AgentSession, agent: str, *, decisions: list[Decision] | None = None) -> Trace:
    if decisions is None:
        decisions = reads.session_decisions(row.id, db=db)
    states = reads.approval_states([d.approval_id for d in decisions if d.approval_id], db=db)
    return Trace(session=session_facts(row, agent), decisions=[
        _traced(d, approval_state=states.get(d.approval_id or "")) for d in decisions])


def _traced(row: Decision, *, approval_state: str | None) -> TraceDecision:
    outcome = None
    if row.outcome_status is not None:
        outcome = TraceOutcome(
            status=row.outcome_status, latency_ms=row.latency_ms, at=timestamp(row.outcome_at),
            actual_cost=None if row.actual_cost_micros is None else to_dollars(row.actual_cost_micros),
            overrun=to_dollars(row.overrun_micros) if row.overrun_micros else None)
    return TraceDecision(
        decision_id=row.id, at=utc(row.at), tool=row.tool, tool_class=row.tool_class, verdict=row.verdict,
        reason=row.reason, would_verdict=row.would_verdict, would_reason=row.would_reason,
        cost=to_dollars(row.cost_micros), preview=row.preview, arguments=arguments_of(row.arguments),
        arguments_digest=row.arguments_digest, approval_id=row.approval_id, approval_state=approval_state,
        outcome=outcome)
