"""Turn table rows into the API's response models (shared by the API and the dashboard)."""

from __future__ import annotations

import json

from sqlmodel import Session, func, select

from gatekeeper.api.schemas import AgentStatus, HistoryEntry, Position, RolloutView, timestamp, utc
from gatekeeper.core import rollout as machine
from gatekeeper.errors import NotFound
from gatekeeper.policies import LoadedPolicy, PolicyStore
from gatekeeper.rollouts import status_of
from gatekeeper.store import rollouts as store
from gatekeeper.store.models import Agent, Approval, GateEvaluation, Rollout, Transition


def describe_agent(session: Session, policies: PolicyStore, agent: Agent) -> AgentStatus:
    """Return an agent's status: rollout, ladder, allowed actions, newest gate report."""
    loaded = _policy_or_none(policies, agent.policy)
    rollout = store.current_rollout(session, agent) or store.latest_rollout(session, agent)
    evaluation = store.latest_evaluation(session, rollout.id) if rollout and rollout.id else None
    active = rollout is not None and rollout.id == agent.rollout_id
    pending = session.exec(select(func.count()).select_from(Approval)
                           .where(Approval.agent_id == agent.id, Approval.state == "pending")).one()
    return AgentStatus(
        name=agent.name, policy=agent.policy, stable_version=agent.stable_version,
        policy_revision=loaded.revision if loaded else None, policy_file=loaded.path if loaded else None,
        rollout=rollout_view(rollout, loaded) if rollout else None,
        ladder=[machine.position_label(loaded.policy, p) for p in machine.ladder(loaded.policy)] if loaded else [],
        allowed_actions=list(machine.allowed_actions(status_of(rollout))) if rollout and active else [],
        gate_report=json.loads(evaluation.report) if evaluation and active else None,
        pending_approvals=int(pending))


def rollout_view(rollout: Rollout, loaded: LoadedPolicy | None) -> RolloutView:
    """Return the API view of a rollout row."""
    position = status_of(rollout).position
    policy = loaded.policy if loaded else None
    return RolloutView(
        id=rollout.id or 0, candidate_version=rollout.candidate_version, stable_version=rollout.stable_version,
        stage=rollout.stage, tier=rollout.tier, state=rollout.state, state_reason=rollout.state_reason,
        tier_label=machine.position_label(policy, position) if policy else rollout.stage,
        traffic_percent=machine.traffic_percent(policy, position) if policy else 0.0,
        tier_started_at=utc(rollout.tier_started_at), started_at=utc(rollout.started_at),
        updated_at=utc(rollout.updated_at), ended_at=timestamp(rollout.ended_at),
        kill_switch_open=rollout.kill_switch_open, policy_revision=rollout.policy_revision)


def history_entry(entry: Transition | GateEvaluation) -> HistoryEntry:
    """Return the API view of a transition or a gate evaluation."""
    if isinstance(entry, Transition):
        return HistoryEntry.model_validate({
            "kind": "transition", "id": entry.id, "rollout_id": entry.rollout_id, "at": timestamp(entry.at),
            "actor": entry.actor, "action": entry.action, "reason": entry.reason,
            "from": Position(stage=entry.from_stage, tier=entry.from_tier, state=entry.from_state)
            if entry.from_stage else None,
            "to": Position(stage=entry.to_stage, tier=entry.to_tier, state=entry.to_state),
            "traffic_percent": entry.traffic_percent, "policy_revision": entry.policy_revision,
            "metrics": store.metrics_of(entry)})
    report = store.metrics_of(entry)
    here = Position(stage=entry.stage, tier=entry.tier, state=None)
    return HistoryEntry.model_validate({
        "kind": "gate_evaluation", "id": entry.id, "rollout_id": entry.rollout_id, "at": timestamp(entry.at),
        "actor": "scheduler", "action": f"gate:{entry.result}", "reason": "; ".join(report.get("reasons", [])),
        "from": here, "to": here, "policy_revision": entry.policy_revision, "metrics": report})


def agent_or_404(session: Session, name: str) -> Agent:
    """Return the agent called `name` or raise NotFound (for path parameters)."""
    try:
        return store.get_agent(session, name)
    except NotFound:
        raise NotFound(f"no agent named {name!r}") from None


def _policy_or_none(policies: PolicyStore, name: str) -> LoadedPolicy | None:
    try:
        return policies.get(name)
    except NotFound:
        return None
