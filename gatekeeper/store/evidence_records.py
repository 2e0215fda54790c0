"""Reads a gate evaluation needs from the database: due rollouts, twin runs, mirrored sessions.

The gate cycle calls these in a read transaction before it opens the write one, so that the
write transaction only locks, judges, stores and acts. Nothing here commits.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from sqlmodel import Session, col, select

from gatekeeper.store.models import Agent, AgentSession, Decision, GateEvaluation, Rollout


def gated_rollouts(*, db: Session, states: Sequence[str]) -> list[tuple[Agent, Rollout]]:
    """Return every agent with its active rollout in one of `states`."""
    query = select(Agent, Rollout).join(Rollout, col(Rollout.id) == Agent.rollout_id).where(
        col(Rollout.state).in_(states))
    return [(agent, rollout) for agent, rollout in db.exec(query).all()]


def evaluated_windows(rollout_ids: Iterable[int], window_keys: Iterable[str], *, db: Session
                      ) -> set[tuple[int, str]]:
    """Return the (rollout, window key) pairs among these that already have a gate evaluation."""
    query = select(GateEvaluation.rollout_id, GateEvaluation.window_key).where(
        col(GateEvaluation.rollout_id).in_(list(rollout_ids)), col(GateEvaluation.window_key).in_(set(window_keys)))
    return {(rid, key) for rid, key in db.exec(query)}


def finished_twin_runs(rollout_id: int, *, since: float, db: Session) -> list[AgentSession]:
    """Return the candidate's ended twin sessions of a rollout started since `since`."""
    query = select(AgentSession).where(
        AgentSession.rollout_id == rollout_id, AgentSession.environment == "twin",
        AgentSession.arm == "candidate", col(AgentSession.ended_at).is_not(None),
        AgentSession.started_at >= since)
    return list(db.exec(query))


def mirrored_sessions(rollout_id: int, *, since: float, db: Session) -> list[AgentSession]:
    """Return the rollout's shadow mirror sessions started since `since`."""
    return list(db.exec(select(AgentSession).where(
        AgentSession.rollout_id == rollout_id, col(AgentSession.mirror_of).is_not(None),
        AgentSession.started_at >= since)))


def decisions_in(session_ids: Sequence[str], *, db: Session) -> list[Decision]:
    """Return every decision of these sessions."""
    return list(db.exec(select(Decision).where(col(Decision.session_id).in_(session_ids))))


def ended_among(session_ids: Sequence[str], *, db: Session) -> set[str]:
    """Return the ids among these of sessions that have ended."""
    return set(db.exec(select(AgentSession.id).where(
        col(AgentSession.id).in_(session_ids), col(AgentSession.ended_at).is_not(None))))


def calls_of(session_ids: Sequence[str], *, db: Session) -> dict[str, list[tuple[str, str]]]:
    """Return each session's (tool, tool class) calls in the order they were decided."""
    query = (select(Decision.session_id, Decision.tool, Decision.tool_class)
             .where(col(Decision.session_id).in_(session_ids)).order_by(col(Decision.at), col(Decision.id)))
    out: dict[str, list[tuple[str, str]]] = {}
    for session_id, tool, tool_class in db.exec(query):
        out.setdefault(session_id, []).append((tool, tool_class))
    return out
