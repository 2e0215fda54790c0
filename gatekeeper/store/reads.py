"""Reads behind the session trace and the dashboard's views. Nothing here commits or writes.

A session's trace is its decisions in the order they were asked; a mirrored pair is the stable
session and the candidate's shadow session opened beside it (`mirror_of` names the stable one).
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import and_
from sqlmodel import Session, col, func, select

from gatekeeper.errors import NotFound
from gatekeeper.store.models import Agent, AgentSession, Approval, Decision, Rollout, Transition

# Transitions after which a gate report no longer describes where the rollout stands.
SUPERSEDING_ACTIONS = ("promote", "promote_full", "rollback", "kill", "abort")


def traced_session(session_id: str, *, db: Session) -> AgentSession:
    """Return one agent session, or raise NotFound."""
    found = db.get(AgentSession, session_id)
    if found is None:
        raise NotFound(f"no session {session_id!r}", field="session_id")
    return found


def paired_session(row: AgentSession, *, db: Session) -> AgentSession | None:
    """Return the other half of a mirrored pair: the stable session of a mirror, or the mirror of a stable one."""
    if row.mirror_of:
        return db.get(AgentSession, row.mirror_of)
    query = select(AgentSession).where(AgentSession.mirror_of == row.id).order_by(col(AgentSession.started_at))
    return db.exec(query).first()


def session_decisions(session_id: str, *, db: Session) -> list[Decision]:
    """Return a session's decisions in the order they were asked."""
    query = select(Decision).where(Decision.session_id == session_id).order_by(col(Decision.at), col(Decision.id))
    return list(db.exec(query))


def agent_name(agent_id: int, *, db: Session) -> str:
    """Return an agent's name by id ("" when it is gone)."""
    found = db.get(Agent, agent_id)
    return found.name if found else ""


def superseding_transition(rollout_id: int, *, after: float, db: Session) -> Transition | None:
    """Return the first transition after `after` that moved or ended the rollout, if any."""
    query = (select(Transition).where(Transition.rollout_id == rollout_id, col(Transition.at) > after,
                                      col(Transition.action).in_(SUPERSEDING_ACTIONS))
             .order_by(col(Transition.at), col(Transition.id)))
    return db.exec(query).first()


def pending_approvals_of(agent_id: int, *, now: float, db: Session) -> list[Approval]:
    """Return an agent's pending approvals that have not run out, oldest first."""
    query = (select(Approval).where(Approval.agent_id == agent_id, Approval.state == "pending",
                                    col(Approval.expires_at) > now)
             .order_by(col(Approval.created_at)))
    return list(db.exec(query.limit(200)))


def pending_count(agent_id: int, *, now: float, db: Session) -> int:
    """Return how many of an agent's approvals are pending and not run out (the lists' own rule)."""
    return int(db.exec(select(func.count()).select_from(Approval).where(
        Approval.agent_id == agent_id, Approval.state == "pending", col(Approval.expires_at) > now)).one())


def decided_approvals_of(agent_id: int, *, limit: int = 5, db: Session) -> list[Approval]:
    """Return an agent's newest approvals that are no longer pending (decided, expired or cancelled)."""
    query = (select(Approval).where(Approval.agent_id == agent_id, Approval.state != "pending")
             .order_by(col(Approval.created_at).desc()).limit(limit))
    return list(db.exec(query))


def decisions_of_approvals(approval_ids: Iterable[str], *, db: Session) -> dict[str, str]:
    """Return, for each approval id, the id of the decision that opened it."""
    wanted = list(approval_ids)
    if not wanted:
        return {}
    # Through the approval's session: decisions are indexed by session, never by approval.
    query = (select(Decision.approval_id, Decision.id)
             .join(Approval, and_(col(Approval.session_id) == Decision.session_id,
                                  col(Approval.id) == Decision.approval_id))
             .where(col(Approval.id).in_(wanted), Decision.verdict == "approval_required"))
    return {approval_id: decision_id for approval_id, decision_id in db.exec(query) if approval_id}


def candidate_versions(rollout_ids: Iterable[int], *, db: Session) -> dict[int, str]:
    """Return the candidate version of each rollout id given."""
    wanted = sorted(set(rollout_ids))
    if not wanted:
        return {}
    query = select(Rollout.id, Rollout.candidate_version).where(col(Rollout.id).in_(wanted))
    return {rollout_id: version for rollout_id, version in db.exec(query) if rollout_id is not None}


def approval_states(approval_ids: Iterable[str], *, db: Session) -> dict[str, str]:
    """Return the state of each approval id given."""
    wanted = sorted(set(approval_ids))
    if not wanted:
        return {}
    return dict(db.exec(select(Approval.id, Approval.state).where(col(Approval.id).in_(wanted))).all())
