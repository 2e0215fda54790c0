"""Reads and writes of the gate cycle: due rollouts, twin runs, mirrored sessions, stored evaluations.

The gate cycle reads in a read transaction before it opens the write one, so that the write
transaction only locks, checks, stores and acts. Every read answers for a whole batch of
rollouts at once. Every gate evaluation is inserted by `insert_evaluations`, one statement for a
list of rows. Nothing here commits.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple, TypedDict

from sqlalchemy import insert
from sqlalchemy import select as select_columns
from sqlmodel import Session, col, select

from gatekeeper.store import scrape_records
from gatekeeper.store.models import Agent, AgentSession, Decision, GateEvaluation, PolicyRevision, Rollout


class GatedRow(NamedTuple):
    """What the gate cycle needs of an agent and its active rollout to see whether its gate is due."""

    agent: str
    policy: str
    rollout_id: int
    version: str
    stage: str
    tier: int
    tier_started_at: float
    failures: int
    errors: int


class EvaluationRow(TypedDict):
    """One gate evaluation to insert: the columns of `gate_evaluations` but its id."""

    rollout_id: int
    agent_id: int
    at: float
    stage: str
    tier: int
    window_key: str
    result: str
    report: str
    policy_revision: str


def gated_rollouts(*, db: Session, states: Sequence[str]) -> list[GatedRow]:
    """Return every agent's active rollout in one of `states`, as plain rows (no ORM objects)."""
    columns: list[Any] = [Agent.name, Agent.policy, Rollout.id, Rollout.candidate_version, Rollout.stage,
                          Rollout.tier, Rollout.tier_started_at, Rollout.consecutive_failures,
                          Rollout.consecutive_errors]
    query = (select_columns(*columns).join(Rollout, col(Rollout.id) == Agent.rollout_id)
             .where(col(Rollout.state).in_(states)).order_by(col(Rollout.id)))
    return [GatedRow(*row) for row in db.execute(query)]


def evaluated_windows(rollout_ids: Iterable[int], window_keys: Iterable[str], *, db: Session
                      ) -> set[tuple[int, str]]:
    """Return the (rollout, window key) pairs among these that already have a gate evaluation."""
    query = select(GateEvaluation.rollout_id, GateEvaluation.window_key).where(
        col(GateEvaluation.rollout_id).in_(list(rollout_ids)), col(GateEvaluation.window_key).in_(set(window_keys)))
    return {(rid, key) for rid, key in db.exec(query)}


def lock_rollouts(rollout_ids: Sequence[int], *, db: Session) -> dict[int, tuple[Agent, Rollout]]:
    """Return these rollouts that are still their agent's active one, with the agent, rows locked (Postgres).

    Rows are locked in rollout id order, so that two schedulers locking overlapping batches never deadlock.
    """
    query = (select(Agent, Rollout).join(Rollout, col(Rollout.id) == Agent.rollout_id)
             .where(col(Rollout.id).in_(list(rollout_ids))).order_by(col(Rollout.id)).with_for_update())
    return {rollout.id or 0: (agent, rollout) for agent, rollout in db.exec(query)}


def policy_revisions(revisions: Iterable[str], *, db: Session) -> list[PolicyRevision]:
    """Return these stored policy revisions: held by the caller, they stay in `db`'s identity map (no query to find)."""
    return list(db.exec(select(PolicyRevision).where(col(PolicyRevision.revision).in_(set(revisions)))))


def insert_evaluations(rows: Sequence[EvaluationRow], *, db: Session) -> None:
    """Insert gate evaluations in one statement and count them for /metrics; a repeated (rollout, window key)
    raises IntegrityError."""
    if rows:
        db.execute(insert(GateEvaluation), list(rows))
        scrape_records.count_evaluations([(row["agent_id"], row["result"]) for row in rows], db=db)


def finished_twin_runs(since: Mapping[int, float], *, db: Session) -> dict[int, list[AgentSession]]:
    """Return each rollout's ended candidate twin sessions started since its own `since`."""
    if not since:
        return {}
    query = select(AgentSession).where(
        col(AgentSession.rollout_id).in_(list(since)), AgentSession.environment == "twin",
        AgentSession.arm == "candidate", col(AgentSession.ended_at).is_not(None),
        AgentSession.started_at >= min(since.values()))
    return _by_rollout(db.exec(query), since)


def mirrored_sessions(since: Mapping[int, float], *, db: Session) -> dict[int, list[AgentSession]]:
    """Return each rollout's shadow mirror sessions started since its own `since`."""
    if not since:
        return {}
    query = select(AgentSession).where(
        col(AgentSession.rollout_id).in_(list(since)), col(AgentSession.mirror_of).is_not(None),
        AgentSession.started_at >= min(since.values()))
    return _by_rollout(db.exec(query), since)


def _by_rollout(found: Iterable[AgentSession], since: Mapping[int, float]) -> dict[int, list[AgentSession]]:
    out: dict[int, list[AgentSession]] = defaultdict(list)
    for row in found:
        if row.rollout_id is not None and row.started_at >= since[row.rollout_id]:
            out[row.rollout_id].append(row)
    return dict(out)


def decisions_in(session_ids: Sequence[str], *, db: Session) -> list[Decision]:
    """Return every decision of these sessions."""
    if not session_ids:
        return []
    return list(db.exec(select(Decision).where(col(Decision.session_id).in_(session_ids))))


def ended_among(session_ids: Sequence[str], *, db: Session) -> set[str]:
    """Return the ids among these of sessions that have ended."""
    if not session_ids:
        return set()
    return set(db.exec(select(AgentSession.id).where(
        col(AgentSession.id).in_(session_ids), col(AgentSession.ended_at).is_not(None))))


def calls_of(session_ids: Sequence[str], *, db: Session) -> dict[str, list[tuple[str, str]]]:
    """Return each session's (tool, tool class) calls in the order they were decided."""
    if not session_ids:
        return {}
    query = (select(Decision.session_id, Decision.tool, Decision.tool_class)
             .where(col(Decision.session_id).in_(session_ids)).order_by(col(Decision.at), col(Decision.id)))
    out: dict[str, list[tuple[str, str]]] = {}
    for session_id, tool, tool_class in db.exec(query):
        out.setdefault(session_id, []).append((tool, tool_class))
    return out
