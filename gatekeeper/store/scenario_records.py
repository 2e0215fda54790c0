"""Reads behind scenarios made from sessions and the twin's fidelity: incidents, their sessions, replays.

Nothing here commits or writes. Every read is bounded (LIMIT), so a long history costs nothing more.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlmodel import Session, col, select

from gatekeeper.store.models import AgentSession, Decision, Transition

MAX_INCIDENTS = 20
MAX_SESSIONS_PER_INCIDENT = 10
MAX_REPLAYS = 500


def incident_transitions(rollout_id: int, *, db: Session) -> list[Transition]:
    """Return the rollout's newest transitions made by the kill switch or an alert."""
    query = (select(Transition).where(Transition.rollout_id == rollout_id,
                                      col(Transition.action).in_(("kill", "rollback", "hold")))
             .order_by(col(Transition.at).desc()).limit(MAX_INCIDENTS * 5))
    return [t for t in db.exec(query) if t.actor == "kill_switch" or '"alert":' in (t.metrics or "")][:MAX_INCIDENTS]


def erring_sessions(rollout_id: int, *, since: float, until: float, db: Session) -> list[AgentSession]:
    """Return live candidate sessions of the rollout with an error outcome between `since` and `until`."""
    ids = (select(Decision.session_id).where(
        Decision.rollout_id == rollout_id, Decision.arm == "candidate", Decision.outcome_status == "error",
        col(Decision.outcome_at) >= since, col(Decision.outcome_at) <= until, col(Decision.stage) != "twin")
        .distinct().limit(MAX_SESSIONS_PER_INCIDENT))
    found = list(db.exec(ids))
    if not found:
        return []
    query = select(AgentSession).where(col(AgentSession.id).in_(found)).order_by(col(AgentSession.started_at))
    return list(db.exec(query))


def stable_replays(scenarios: Sequence[str], *, agent_id: int | None, rollout_id: int | None, since: float,
                   db: Session) -> list[AgentSession]:
    """Return the newest ended stable-arm twin runs of these scenarios since `since`, oldest first.

    By rollout when `rollout_id` is given (the gate: runs during its visit), else by agent (the page).
    """
    if not scenarios:
        return []
    owner = AgentSession.rollout_id == rollout_id if rollout_id is not None else AgentSession.agent_id == agent_id
    query = (select(AgentSession).where(
        owner, AgentSession.environment == "twin", AgentSession.arm == "stable",
        col(AgentSession.scenario).in_(list(scenarios)), col(AgentSession.ended_at).is_not(None),
        AgentSession.started_at >= since).order_by(col(AgentSession.started_at).desc()).limit(MAX_REPLAYS))
    return list(reversed(list(db.exec(query))))


def calls_with_arguments(session_ids: Sequence[str], *, db: Session
                         ) -> dict[str, list[tuple[str, str, str | None]]]:
    """Return each session's (tool, tool class, stored arguments) calls in the order they were decided."""
    if not session_ids:
        return {}
    query = (select(Decision.session_id, Decision.tool, Decision.tool_class, Decision.arguments)
             .where(col(Decision.session_id).in_(list(session_ids))).order_by(col(Decision.at), col(Decision.id)))
    out: dict[str, list[tuple[str, str, str | None]]] = {}
    for session_id, tool, tool_class, arguments in db.exec(query):
        out.setdefault(session_id, []).append((tool, tool_class, arguments))
    return out
