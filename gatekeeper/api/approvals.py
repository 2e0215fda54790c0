"""The approval queue: release managers approve or reject; agents read their approvals' state."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from flask import Blueprint

from gatekeeper import approvals
from gatekeeper.api.auth import ACTORS, READERS, Caller
from gatekeeper.api.routing import endpoint
from gatekeeper.api.runtime_schemas import ApprovalAction, ApprovalQuery, ApprovalView
from gatekeeper.api.schemas import timestamp
from gatekeeper.core.budgets import to_dollars
from gatekeeper.services import services
from gatekeeper.store import rollout_records
from gatekeeper.store.models import Approval

bp = Blueprint("approvals", __name__)


@endpoint(bp, "/v1/approvals", methods=["GET"], roles=READERS, query=ApprovalQuery,
          response=list[ApprovalView])
def list_approvals(*, caller: Caller, query: ApprovalQuery) -> list[ApprovalView]:
    """List approvals of one state (default pending), newest first; due ones expire on the way."""
    found = approvals.listing(services(), state=None if query.state == "all" else query.state, now=services().clock())
    return _views(found)


@endpoint(bp, "/v1/approvals/<approval_id>", methods=["GET"], roles=("agent", *READERS), response=ApprovalView)
def get_approval(approval_id: str, *, caller: Caller) -> ApprovalView:
    """Show one approval's state; an agent sees only its own agent's approvals."""
    view = _views([approvals.get(services(), approval_id, now=services().clock())])[0]
    caller.require_agent(view.agent)
    return view


@endpoint(bp, "/v1/approvals/<approval_id>/approve", methods=["POST"], roles=ACTORS, body=ApprovalAction,
          response=ApprovalView)
def approve(approval_id: str, *, caller: Caller, body: ApprovalAction) -> ApprovalView:
    """Approve a pending call; the agent repeats its decision with the approval_id, once."""
    found = approvals.approve(services(), approval_id, actor=caller.actor, reason=body.reason, now=services().clock())
    return _views([found])[0]


@endpoint(bp, "/v1/approvals/<approval_id>/reject", methods=["POST"], roles=ACTORS, body=ApprovalAction,
          response=ApprovalView)
def reject(approval_id: str, *, caller: Caller, body: ApprovalAction) -> ApprovalView:
    """Reject a pending call; its repeated decision is denied with reason approval_rejected."""
    found = approvals.reject(services(), approval_id, actor=caller.actor, reason=body.reason, now=services().clock())
    return _views([found])[0]


def _views(rows: list[Approval]) -> list[ApprovalView]:
    with services().db.reading() as db:
        names = rollout_records.agent_names(db=db)
    return [ApprovalView(
        approval_id=a.id, agent=names.get(a.agent_id, ""), session_id=a.session_id, version=a.version, tool=a.tool,
        tool_class=a.tool_class, cost=to_dollars(a.cost_micros), preview=a.preview, stage=a.stage,
        arguments=json.loads(a.arguments) if a.arguments is not None else None,
        state=a.state,  # type: ignore[arg-type]
        used=a.consumed_at is not None, created_at=_at(a.created_at), expires_at=_at(a.expires_at),
        decided_by=a.decided_by, decided_at=timestamp(a.decided_at), decision_reason=a.decision_reason)
        for a in rows]


def _at(value: float) -> datetime:
    return datetime.fromtimestamp(value, tz=UTC)
