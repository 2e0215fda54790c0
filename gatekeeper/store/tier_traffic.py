"""The built-in metrics source's reads: live, non-mirrored candidate traffic of rollouts in a window.

Three grouped queries answer for every rollout of one window at once. Nothing here commits.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from typing import Any

from sqlalchemy import and_, case, or_
from sqlmodel import Session, col, func, select

from gatekeeper.store.models import AgentSession, Decision


def _within(since: Mapping[int, float], rollout: Any, column: Any, *, now: float) -> Any:
    """Traffic of each rollout inside its own window (a tier's first instant counts, as in arm_traffic).

    Each rollout's term carries both bounds, so the database reads one index range per rollout (SQLite's
    multi-index OR, Postgres's bitmap OR) instead of a tier's whole traffic up to `now`.
    """
    return or_(*(and_(rollout == rid, column >= start, column <= now) for rid, start in since.items()))


_LIVE_CANDIDATE = (AgentSession.arm == "candidate", AgentSession.environment == "live",
                   col(AgentSession.mirror_of).is_(None))


def session_counts(since: Mapping[int, float], *, now: float, db: Session) -> dict[int, tuple[int, int]]:
    """Return (sessions, spend in micros) started in the window, per rollout (`since`: each rollout's start)."""
    query = (select(AgentSession.rollout_id, func.count(), func.coalesce(func.sum(AgentSession.spend_micros), 0))
             .where(*_LIVE_CANDIDATE,
                    _within(since, col(AgentSession.rollout_id), col(AgentSession.started_at), now=now))
             .group_by(col(AgentSession.rollout_id)))
    return {int(rid): (int(n), int(spend)) for rid, n, spend in db.exec(query) if rid is not None}


def _decided(since: Mapping[int, float], *, now: float) -> list[Any]:
    return [Decision.arm == "candidate", _within(since, col(Decision.rollout_id), col(Decision.outcome_at), now=now),
            *_LIVE_CANDIDATE]


def outcome_counts(since: Mapping[int, float], *, now: float, db: Session) -> dict[int, tuple[int, int, int]]:
    """Return (outcomes, errors, overruns) reported in the window, per rollout."""
    errors = func.sum(case((col(Decision.outcome_status) == "error", 1), else_=0))
    overruns = func.sum(case((col(Decision.overrun_micros) > 0, 1), else_=0))
    query = (select(Decision.rollout_id, func.count(), func.coalesce(errors, 0), func.coalesce(overruns, 0))
             .join(AgentSession, col(AgentSession.id) == Decision.session_id)
             .where(*_decided(since, now=now)).group_by(col(Decision.rollout_id)))
    return {int(rid): (int(n), int(e), int(o)) for rid, n, e, o in db.exec(query) if rid is not None}


def latencies(since: Mapping[int, float], *, now: float, db: Session) -> dict[int, list[float]]:
    """Return the latencies in seconds of the outcomes reported in the window, per rollout."""
    query = (select(Decision.rollout_id, Decision.latency_ms)
             .join(AgentSession, col(AgentSession.id) == Decision.session_id)
             .where(*_decided(since, now=now), col(Decision.latency_ms).is_not(None)))
    out: dict[int, list[float]] = defaultdict(list)
    for rid, latency_ms in db.exec(query):
        out[int(rid or 0)].append((latency_ms or 0.0) / 1000)
    return out
