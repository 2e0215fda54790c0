"""Reads only the dashboard needs: chart series, a rollout's transitions, the approval lists.

Nothing here commits. A long rollout has thousands of gate evaluations, so the chart
series picks at most `max_points` + 1 of them spread evenly over the rollout's time, on the
(rollout, at) index, and reads the JSON reports only for the chosen rows.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import Integer, cast
from sqlmodel import Session, col, func, select

from gatekeeper.store.models import AgentSession, Approval, GateEvaluation, PolicyRevision, Transition

CHART_POINTS = 400


def evaluation_values(rollout_id: int, *, max_points: int = CHART_POINTS, db: Session
                      ) -> list[tuple[float, dict[str, Any]]]:
    """Return (time, report["values"]) of a rollout's gate evaluations, oldest first, thinned evenly over time."""
    chosen = charted_evaluations(rollout_id, max_points=max_points, db=db)
    reports = db.exec(select(GateEvaluation.at, GateEvaluation.report)
                           .where(col(GateEvaluation.id).in_(chosen))
                           .order_by(col(GateEvaluation.at), col(GateEvaluation.id))).all()
    return [(at, _values(report)) for at, report in reports]


def charted_evaluations(rollout_id: int, *, max_points: int = CHART_POINTS, db: Session) -> list[int]:
    """Return the ids of the evaluations a rollout's chart shows: the first, and the newest of each time slice.

    Chosen on the (rollout, at) index alone. Retention keeps these when it prunes the rest; with the
    first and the last kept, the slices stay where they were, so a second pass finds nothing more.
    """
    at = col(GateEvaluation.at)
    first, last = (db.exec(select(GateEvaluation.at).where(GateEvaluation.rollout_id == rollout_id)
                           .order_by(order).limit(1)).first() for order in (at, at.desc()))
    if first is None or last is None:
        return []
    width = max((last - first) / max_points, 1e-6)
    slot = cast((at - first) / width, Integer)
    slots = select(func.max(GateEvaluation.id)).where(GateEvaluation.rollout_id == rollout_id).group_by(slot)
    newest = {int(row_id or 0) for row_id in db.exec(slots)}
    oldest = db.exec(select(GateEvaluation.id).where(GateEvaluation.rollout_id == rollout_id)
                     .order_by(at, col(GateEvaluation.id)).limit(1)).first()
    return sorted(newest if oldest is None else newest | {int(oldest)})


def rollout_transitions(rollout_id: int, *, db: Session) -> list[Transition]:
    """Return a rollout's transitions, oldest first."""
    query = (select(Transition).where(Transition.rollout_id == rollout_id)
             .order_by(col(Transition.at), col(Transition.id)))
    return list(db.exec(query))


def session_environments(session_ids: list[str], *, db: Session) -> dict[str, str]:
    """Return the environment (live or twin) of each session id given."""
    if not session_ids:
        return {}
    query = select(AgentSession.id, AgentSession.environment).where(col(AgentSession.id).in_(session_ids))
    return dict(db.exec(query).all())


def recent_decided_approvals(*, limit: int = 20, db: Session) -> list[Approval]:
    """Return the newest approvals that are no longer pending."""
    query = (select(Approval).where(Approval.state != "pending")
             .order_by(func.coalesce(Approval.decided_at, Approval.expires_at).desc()).limit(limit))
    return list(db.exec(query))


def policy_revision(revision: str, *, db: Session) -> PolicyRevision | None:
    """Return a stored policy revision's text, if it ever governed something."""
    return db.get(PolicyRevision, revision)


def _values(report: str) -> dict[str, Any]:
    try:
        loaded = json.loads(report or "{}")
    except ValueError:
        return {}
    values = loaded.get("values") if isinstance(loaded, dict) else None
    return values if isinstance(values, dict) else {}
