"""Release-manager use cases: register agents, start rollouts and move them. One commit each.

`transition()` is the single place a rollout moves: it asks the pure state machine for the
new status, writes it with an audit entry naming actor, reason, tiers before and after, policy revision
and the numbers that drove it, and never commits, so the kill switch, the scheduler and the
alert intake can move a rollout inside their own transaction.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlmodel import Session

from gatekeeper import notify
from gatekeeper.core import ladder
from gatekeeper.core.ladder import RolloutStatus
from gatekeeper.core.vocabulary import TERMINAL_STATES, HoldOwner
from gatekeeper.errors import BadRequest, Conflict, IllegalTransition
from gatekeeper.policy_store import LoadedPolicy
from gatekeeper.services import Services
from gatekeeper.store import rollout_records
from gatekeeper.store.models import Agent, Rollout, StableChange, Transition
from gatekeeper.store.session_records import cancel_rollout_approvals


def register_agent(svc: Services, name: str, *, policy: str, stable_version: str | None, now: float) -> Agent:
    """Register an agent bound to a loaded policy."""
    loaded = svc.policies.get(policy)
    if loaded.policy.agents and name not in loaded.policy.agents:
        raise BadRequest(f"policy {policy} binds only {', '.join(loaded.policy.agents)}; "
                         f"add {name} to its agents", field="policy")
    with svc.db.transaction() as db:
        if rollout_records.find_agent(name, db=db) is not None:
            raise Conflict(f"agent {name!r} is already registered", field="name")
        agent = Agent(name=name, policy=policy, stable_version=stable_version, created_at=now)
        db.add(agent)
        db.flush()
        if stable_version:
            rollout_records.ensure_version(agent, stable_version, now=now, db=db)
        return agent


def set_stable(svc: Services, agent_name: str, *, version: str, actor: str, reason: str, now: float
               ) -> StableChange:
    """Set an agent's stable version while no rollout is in progress, with an audit entry."""
    with svc.db.transaction() as db:
        agent = rollout_records.get_agent(agent_name, for_update=True, db=db)
        if agent.rollout_id is not None:
            raise Conflict(f"agent {agent_name} has a rollout in progress; its completion sets the stable "
                           "version (or abort it first)", field="version")
        change = StableChange(agent_id=rollout_records.row_id(agent.id), at=now, actor=actor, reason=reason,
                              from_version=agent.stable_version, to_version=version)
        agent.stable_version = version
        rollout_records.ensure_version(agent, version, now=now, db=db)
        db.add(agent)
        db.add(change)
        db.flush()
        return change


def start_rollout(svc: Services, agent_name: str, *, version: str, actor: str, reason: str, now: float
                  ) -> Transition:
    """Start a candidate version at twin."""
    with svc.db.transaction() as db:
        agent = rollout_records.get_agent(agent_name, for_update=True, db=db)
        if agent.rollout_id is not None:
            raise Conflict(f"agent {agent_name} already has a rollout in progress", field="version")
        if version == agent.stable_version:
            raise BadRequest(f"{version} is already the stable version", field="version")
        loaded = svc.policies.get(agent.policy)
        status = ladder.start(now=now, reason=reason or "rollout started")
        row = Rollout(agent_id=rollout_records.row_id(agent.id), candidate_version=version,
                      stable_version=agent.stable_version,
                      stage=status.stage, tier=status.tier, state=status.state, state_reason=status.reason,
                      tier_started_at=now, started_at=now, updated_at=now, policy_revision=loaded.revision)
        db.add(row)
        db.flush()
        agent.rollout_id = row.id
        rollout_records.ensure_version(agent, version, now=now, db=db)
        return _record(db, agent, row, loaded, None, status, action="start", actor=actor, now=now)


def act(svc: Services, agent_name: str, action: str, *, actor: str, reason: str, now: float,
        to_stage: str | None = None, metrics: Mapping[str, Any] | None = None, held_by: HoldOwner = "gate",
        held_by_alert: str | None = None) -> Transition:
    """Apply a person's (or the system's) action to the agent's active rollout and commit it."""
    with svc.db.transaction() as db:
        agent = rollout_records.get_agent(agent_name, for_update=True, db=db)
        rollout = rollout_records.current_rollout(agent, for_update=True, db=db)
        if rollout is None:
            raise Conflict(f"agent {agent_name} has no rollout in progress", field="agent")
        loaded = svc.policies.get(agent.policy)
        return transition(db, loaded, agent, rollout, action, actor=actor, reason=reason, now=now,
                          to_stage=to_stage, metrics=metrics, held_by=held_by, held_by_alert=held_by_alert)


def transition(db: Session, loaded: LoadedPolicy, agent: Agent, rollout: Rollout, action: str, *,
               actor: str, reason: str, now: float, to_stage: str | None = None,
               metrics: Mapping[str, Any] | None = None, held_by: HoldOwner = "gate",
               held_by_alert: str | None = None) -> Transition:
    """Move a rollout by `action` inside the caller's transaction; raise IllegalTransition if not allowed.

    A hold records who holds the rollout (`held_by`, and the alert's fingerprint); leaving held clears it.
    """
    entry = _move(db, loaded, agent, rollout, action, actor=actor, reason=reason, now=now, to_stage=to_stage,
                  metrics=metrics, held_by=held_by, held_by_alert=held_by_alert)
    db.flush()
    notify.enqueue(db, entry, agent=agent, rollout=rollout)  # delivered later, never blocking this
    return entry


@dataclass(frozen=True)
class Move:
    """One rollout to move by `transition_many`, with what `transition` takes for it."""

    loaded: LoadedPolicy
    agent: Agent
    rollout: Rollout
    action: str
    reason: str
    metrics: Mapping[str, Any] | None = None
    held_by: HoldOwner = "gate"


def transition_many(db: Session, moves: Sequence[Move], *, actor: str, now: float
                    ) -> list[Transition | IllegalTransition]:
    """Move many rollouts as `transition` moves one, writing all their audit entries in one flush.

    Returns each move's audit entry, or the IllegalTransition that refused it (that rollout is untouched).
    """
    for loaded in {move.loaded.revision: move.loaded for move in moves}.values():  # a new revision, stored once
        rollout_records.remember_revision(revision=loaded.revision, name=loaded.policy.name, path=loaded.path,
                                          text=loaded.text, now=now, db=db)
    db.flush()
    done: list[Transition | IllegalTransition] = []
    with db.no_autoflush:  # approvals are cancelled by statement: nothing pending needs writing first
        for move in moves:
            try:
                done.append(_move(db, move.loaded, move.agent, move.rollout, move.action, actor=actor,
                                  reason=move.reason, now=now, metrics=move.metrics, held_by=move.held_by))
            except IllegalTransition as exc:
                done.append(exc)
    db.flush()  # one batch of inserts: every entry gets its id
    for move, entry in zip(moves, done, strict=True):
        if isinstance(entry, Transition):
            notify.enqueue(db, entry, agent=move.agent, rollout=move.rollout)
    return done


def _move(db: Session, loaded: LoadedPolicy, agent: Agent, rollout: Rollout, action: str, *, actor: str,
          reason: str, now: float, to_stage: str | None = None, metrics: Mapping[str, Any] | None = None,
          held_by: HoldOwner = "gate", held_by_alert: str | None = None) -> Transition:
    """Apply `action` to the rollout and add its audit entry, unflushed."""
    before = status_of(rollout)
    after = ladder.apply(before, action, loaded.policy, now=now, reason=reason, to_stage=to_stage,
                          revert_to=loaded.policy.kill_switch.revert_to)
    rollout.stage, rollout.tier, rollout.state = after.stage, after.tier, after.state
    rollout.state_reason, rollout.tier_started_at, rollout.updated_at = after.reason, after.tier_started_at, now
    rollout.policy_revision = loaded.revision
    rollout.kill_switch_open = after.state == "killed"
    if action == "hold" or after.state != "held":
        held = after.state == "held"
        rollout.held_by, rollout.held_by_alert = (held_by, held_by_alert) if held else (None, None)
    if after.current_tier != before.current_tier:
        rollout.consecutive_failures = rollout.consecutive_errors = 0
    if after.state in TERMINAL_STATES:
        _finish(agent, rollout, now=now)
    _cancel_approvals(db, rollout, before, after, action=action, now=now)
    db.add(rollout)
    return _entry(db, agent, rollout, loaded, before, after, action=action, actor=actor, now=now, metrics=metrics)


def status_of(rollout: Rollout) -> RolloutStatus:
    """Return the pure status of a rollout row."""
    return RolloutStatus(rollout.stage, rollout.tier, rollout.state, rollout.state_reason,
                         rollout.tier_started_at)


def _cancel_approvals(db: Session, rollout: Rollout, before: RolloutStatus, after: RolloutStatus, *,
                      action: str, now: float) -> None:
    """Cancel the pending approvals a transition makes moot, in the transition's transaction (SPEC §5).

    Approvals asked in a stage the rollout leaves are cancelled; a kill, an abort or the completion
    cancels every pending approval of the rollout, whatever stage it lands in.
    """
    ends = action == "kill" or after.state in TERMINAL_STATES
    if not ends and after.stage == before.stage:
        return
    reason = f"the rollout was {after.state}" if ends else f"the rollout left {before.stage}"
    cancel_rollout_approvals(rollout_records.row_id(rollout.id), keep_stage=None if ends else after.stage,
                             reason=reason, now=now, db=db)


def _finish(agent: Agent, rollout: Rollout, *, now: float) -> None:
    rollout.ended_at = now
    agent.rollout_id = None
    if rollout.state == "completed":
        agent.stable_version = rollout.candidate_version


def _record(db: Session, agent: Agent, rollout: Rollout, loaded: LoadedPolicy,
            before: RolloutStatus | None, after: RolloutStatus, *, action: str, actor: str, now: float,
            metrics: Mapping[str, Any] | None = None) -> Transition:
    """Add the audit entry of a move and its notification."""
    entry = _entry(db, agent, rollout, loaded, before, after, action=action, actor=actor, now=now, metrics=metrics)
    db.flush()
    notify.enqueue(db, entry, agent=agent, rollout=rollout)  # delivered later, never blocking this
    return entry


def _entry(db: Session, agent: Agent, rollout: Rollout, loaded: LoadedPolicy,
           before: RolloutStatus | None, after: RolloutStatus, *, action: str, actor: str, now: float,
           metrics: Mapping[str, Any] | None = None) -> Transition:
    rollout_records.remember_revision(revision=loaded.revision, name=loaded.policy.name, path=loaded.path,
                            text=loaded.text, now=now, db=db)
    entry = Transition(
        rollout_id=rollout_records.row_id(rollout.id), agent_id=rollout_records.row_id(agent.id), at=now, actor=actor,
        action=action,
        reason=after.reason,
        from_stage=before.stage if before else None, from_tier=before.tier if before else None,
        from_state=before.state if before else None, to_stage=after.stage, to_tier=after.tier,
        to_state=after.state, traffic_percent=ladder.traffic_percent(loaded.policy, after.current_tier),
        policy_revision=loaded.revision, metrics=json.dumps(dict(metrics or {}), sort_keys=True))
    db.add(entry)
    db.add(agent)
    return entry
