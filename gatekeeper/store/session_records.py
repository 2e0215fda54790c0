"""Sessions, approvals and the kill switch's window off the decision path, through the ORM. Nothing here commits.

Outcome reports are settled on the hot path (store/outcome_statements.py)."""

from __future__ import annotations

import math
from typing import Any

from sqlalchemy import or_, text
from sqlmodel import Session, col, select, update

from gatekeeper.errors import NotFound
from gatekeeper.store.models import AgentSession, Approval, Decision
from gatekeeper.store.outcome_statements import WINDOW_SQL, bucket_width


def get_session(session_id: str, *, db: Session) -> AgentSession:
    """Return a session row, or raise NotFound."""
    row = db.get(AgentSession, session_id)
    if row is None:
        raise NotFound(f"no session {session_id!r}", field="session_id")
    return row


def get_decision(decision_id: str, *, db: Session) -> Decision:
    """Return a decision row, or raise NotFound."""
    row = db.get(Decision, decision_id)
    if row is None:
        raise NotFound(f"no decision {decision_id!r}", field="decision_id")
    return row


def end_session(session_id: str, *, status: str, passed: bool | None, now: float, db: Session) -> bool:
    """Close an open session; False when it was already closed."""
    changed = db.execute(
        update(AgentSession).where(col(AgentSession.id) == session_id, col(AgentSession.status) == "open")
        .values(status=status, passed=passed, ended_at=now))
    return int(changed.rowcount) == 1  # type: ignore[attr-defined]


def candidate_outcomes(rollout_id: int, *, window_s: float, now: float, db: Session) -> tuple[int, int]:
    """Return (outcomes, errors) of the rollout's live candidate calls in the kill switch's buckets of the window."""
    since = math.floor((now - window_s) / bucket_width(window_s)) * bucket_width(window_s)
    row = db.execute(text(WINDOW_SQL), {"rollout_id": rollout_id, "since": since}).one()
    return int(row[0]), int(row[1])


def decisions_of(session_id: str, *, db: Session) -> list[Decision]:
    """Return a session's decisions in the order they were asked."""
    query = select(Decision).where(Decision.session_id == session_id).order_by(col(Decision.at), col(Decision.id))
    return list(db.exec(query))


def expire_due_approvals(*, now: float, db: Session) -> None:
    """Mark every pending approval whose time ran out as expired."""
    db.execute(update(Approval).where(col(Approval.state) == "pending", col(Approval.expires_at) <= now)
                    .values(state="expired"))


def list_approvals(*, state: str | None, agent_id: int | None = None, db: Session) -> list[Approval]:
    """Return approvals, newest first, optionally of one state and agent."""
    query = select(Approval).order_by(col(Approval.created_at).desc())
    if state is not None:
        query = query.where(Approval.state == state)
    if agent_id is not None:
        query = query.where(Approval.agent_id == agent_id)
    return list(db.exec(query.limit(500)))


def get_approval(approval_id: str, *, for_update: bool = False, db: Session) -> Approval:
    """Return an approval, or raise NotFound."""
    query = select(Approval).where(Approval.id == approval_id)
    found = db.exec(query.with_for_update() if for_update else query).first()
    if found is None:
        raise NotFound(f"no approval {approval_id!r}", field="approval_id")
    return found


def cancel_session_approvals(session_id: str, *, reason: str, now: float, db: Session) -> int:
    """Cancel the pending approvals of one session; return how many."""
    return _cancel([col(Approval.session_id) == session_id], reason=reason, now=now, db=db)


def cancel_rollout_approvals(rollout_id: int, *, keep_stage: str | None, reason: str,
                             now: float, db: Session) -> int:
    """Cancel a rollout's pending approvals, except those asked in `keep_stage` (None: all); return how many."""
    where = [col(Approval.rollout_id) == rollout_id]
    if keep_stage is not None:
        where.append(or_(col(Approval.stage).is_(None), col(Approval.stage) != keep_stage))
    return _cancel(where, reason=reason, now=now, db=db)


def _cancel(where: list[Any], *, reason: str, now: float, db: Session) -> int:
    changed = db.execute(update(Approval).where(col(Approval.state) == "pending", *where)
                              .values(state="cancelled", decided_at=now, decision_reason=reason))
    return int(changed.rowcount)  # type: ignore[attr-defined]
