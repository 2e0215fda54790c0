"""Data access for replaying a recorded rollout (`gatekeeper policy backtest`). Nothing here commits."""

from __future__ import annotations

from sqlalchemy import case
from sqlmodel import Session, col, func, select

from gatekeeper.errors import NotFound
from gatekeeper.store.models import Agent, Decision, Rollout, Transition


def recorded_rollout(agent: Agent, *, rollout_id: int | None, db: Session) -> Rollout:
    """Return the agent's rollout `rollout_id`, or its newest one; raise NotFound when there is none."""
    query = select(Rollout).where(Rollout.agent_id == agent.id)
    query = query.where(Rollout.id == rollout_id) if rollout_id is not None else \
        query.order_by(col(Rollout.id).desc())
    found = db.exec(query).first()
    if found is None:
        which = f"rollout {rollout_id}" if rollout_id is not None else "a rollout"
        raise NotFound(f"agent {agent.name!r} has no {which}", field="rollout")
    return found


def transitions_of(rollout_id: int, *, db: Session) -> list[Transition]:
    """Return every transition of a rollout, oldest first."""
    query = select(Transition).where(Transition.rollout_id == rollout_id).order_by(col(Transition.at),
                                                                                    col(Transition.id))
    return list(db.exec(query))


def last_outcome_at(rollout_id: int, *, db: Session) -> float | None:
    """Return when the rollout's last reported outcome arrived, if any."""
    value = db.exec(select(func.max(Decision.outcome_at)).where(Decision.rollout_id == rollout_id)).first()
    return float(value) if value is not None else None


def candidate_outcomes_between(rollout_id: int, *, since: float, until: float, db: Session) -> tuple[int, int]:
    """Return (outcomes, errors) of candidate non-twin calls reported in (since, until], as the kill switch counts."""
    errors = func.sum(case((col(Decision.outcome_status) == "error", 1), else_=0))
    row = db.exec(select(func.count(), errors).where(
        Decision.rollout_id == rollout_id, Decision.arm == "candidate", col(Decision.outcome_at) > since,
        col(Decision.outcome_at) <= until, col(Decision.stage) != "twin")).one()
    return int(row[0] or 0), int(row[1] or 0)
