"""Approvals: a person says yes or no to one tool call before it runs.

A decision on a class the stage lists under `approval_required` opens a pending approval with
the call's tool, class, cost, preview, the rollout's stage, and its arguments (redacted per the
policy's `approvals.redact`, with the digest of the whole). It expires `approvals.expire_after`
after it opened (lazily: whoever reads it first after that marks it). A release manager approves
or rejects it; the agent then repeats the decision with the `approval_id` and the same arguments,
which an approval answers once; changed arguments need a new approval. Expired, rejected, spent
and cancelled approvals are denied with their reason. A pending approval is cancelled when its
session ends (`sessions.end_session`) or its rollout leaves the stage it was asked in
(`rollouts.transition`), in the same transaction as that change.
"""

from __future__ import annotations

from sqlmodel import Session

from gatekeeper.errors import Conflict
from gatekeeper.services import Services
from gatekeeper.store import session_records
from gatekeeper.store.models import Approval


def approve(svc: Services, approval_id: str, *, actor: str, reason: str, now: float) -> Approval:
    """Approve a pending approval."""
    return _settle(svc, approval_id, "approved", actor=actor, reason=reason, now=now)


def reject(svc: Services, approval_id: str, *, actor: str, reason: str, now: float) -> Approval:
    """Reject a pending approval."""
    return _settle(svc, approval_id, "rejected", actor=actor, reason=reason, now=now)


def pending(db: Session, *, now: float) -> list[Approval]:
    """Return the pending approvals, newest first, after expiring the due ones (inside the caller's transaction)."""
    session_records.expire_due_approvals(now=now, db=db)
    return session_records.list_approvals(state="pending", db=db)


def listing(svc: Services, *, state: str | None, now: float) -> list[Approval]:
    """Return approvals of one state (None: all), newest first, after expiring the due ones."""
    with svc.db.transaction() as db:
        session_records.expire_due_approvals(now=now, db=db)
        return session_records.list_approvals(state=state, db=db)


def get(svc: Services, approval_id: str, *, now: float) -> Approval:
    """Return one approval, expiring it first when its time ran out."""
    with svc.db.transaction() as db:
        return _expire_if_due(db, session_records.get_approval(approval_id, for_update=True, db=db), now=now)


def _settle(svc: Services, approval_id: str, state: str, *, actor: str, reason: str, now: float) -> Approval:
    with svc.db.transaction() as db:
        approval = _expire_if_due(db, session_records.get_approval(approval_id, for_update=True, db=db), now=now)
        if approval.state == "pending":
            approval.state, approval.decided_by, approval.decided_at = state, actor, now
            approval.decision_reason = reason
            db.add(approval)
    if approval.state != state or approval.decided_at != now:
        # Raised after the commit, so that an expiry found on the way is kept.
        raise Conflict(f"approval {approval_id} is {approval.state}, no longer pending", field="approval_id")
    return approval


def _expire_if_due(db: Session, approval: Approval, *, now: float) -> Approval:
    if approval.state == "pending" and now >= approval.expires_at:
        approval.state = "expired"
        db.add(approval)
    return approval
