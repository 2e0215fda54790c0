"""Data access for `gate.compare`: both arms' live traffic since each rollout's tier began. Nothing here commits.

Three grouped queries answer every compared rollout of a cycle at once: calls and errors per
arm, sessions (errored or not, and their spend) per arm, and every call's latency per arm.
Shadow mirrors and twin runs never count.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from typing import Any

import numpy as np
from sqlalchemy import Float, Integer, and_, case, cast, or_
from sqlmodel import Session, col, func, select

from gatekeeper.core.comparison import ArmEvidence, ArmSample, Distribution, Moments
from gatekeeper.store.models import AgentSession, Decision

NO_ARMS = ArmEvidence(ArmSample(), ArmSample())


def _live_arms(starts: Mapping[int, float], column: Any) -> list[Any]:
    """Live, non-mirrored traffic of either arm of these rollouts since each one's tier began."""
    since = or_(*(and_(col(AgentSession.rollout_id) == rid, column >= start) for rid, start in starts.items()))
    return [col(AgentSession.rollout_id).in_(list(starts)), AgentSession.environment == "live",
            col(AgentSession.mirror_of).is_(None), since]


def arm_evidence(starts: Mapping[int, float], *, now: float, db: Session) -> dict[int, ArmEvidence]:
    """Return both arms' calls, sessions, spend and latencies since each rollout's tier began: three queries.

    `starts` maps each rollout id to the time its tier began; shadow mirrors and twin runs never count.
    """
    calls = _arm_calls(starts, now=now, db=db)
    sessions = _arm_sessions(starts, now=now, db=db)
    latencies = _arm_latencies(starts, now=now, db=db)
    out = {}
    for rid in starts:
        arms = {arm: ArmSample(calls=calls.get((rid, arm)), sessions=sessions.get((rid, arm), (None, None))[0],
                               cost=sessions.get((rid, arm), (None, None))[1],
                               latency=_distribution(latencies.get((rid, arm), [])))
                for arm in ("candidate", "stable")}
        out[rid] = ArmEvidence(arms["candidate"], arms["stable"])
    return out


def _arm_calls(starts: Mapping[int, float], *, now: float, db: Session) -> dict[tuple[int, str], Moments]:
    """Count calls and errors per session, then per arm: the error rate's spread allows for bursts in a session."""
    errors = func.sum(case((col(Decision.outcome_status) == "error", 1), else_=0))
    per_session = (select(AgentSession.rollout_id, Decision.arm, cast(func.count(), Float).label("calls"),
                          cast(func.coalesce(errors, 0), Float).label("errors"))
                   .join(AgentSession, col(AgentSession.id) == Decision.session_id)
                   .where(*_live_arms(starts, col(Decision.outcome_at)), col(Decision.outcome_at) <= now)
                   .group_by(col(AgentSession.id), col(AgentSession.rollout_id), col(Decision.arm))
                   .subquery())
    c, e = per_session.c.calls, per_session.c.errors
    columns: list[Any] = [per_session.c.rollout_id, per_session.c.arm, func.count(), func.sum(c), func.sum(e),
                          func.sum(c * c), func.sum(e * e), func.sum(c * e)]
    query = select(*columns).group_by(per_session.c.rollout_id, per_session.c.arm)
    return {(int(rid or 0), arm): Moments.clustered(float(e_sum or 0), float(c_sum or 0), clusters=float(k),
                                                    hits_sq=float(ee or 0), n_sq=float(cc or 0), cross=float(ce or 0))
            for rid, arm, k, c_sum, e_sum, cc, ee, ce in db.exec(query)}


def _arm_sessions(starts: Mapping[int, float], *, now: float, db: Session
                  ) -> dict[tuple[int, str], tuple[Moments, Moments]]:
    errored = func.coalesce(func.max(case((col(Decision.outcome_status) == "error", 1), else_=0)), 0)
    per_session = (select(AgentSession.rollout_id, AgentSession.arm,
                          cast(AgentSession.spend_micros, Float).label("spend"), errored.label("errored"))
                   .outerjoin(Decision, and_(col(Decision.session_id) == AgentSession.id,
                                             col(Decision.outcome_at) <= now))
                   .where(*_live_arms(starts, col(AgentSession.started_at)), AgentSession.started_at <= now)
                   .group_by(col(AgentSession.id), col(AgentSession.rollout_id), col(AgentSession.arm),
                             col(AgentSession.spend_micros))
                   .subquery())
    spend = per_session.c.spend / 1_000_000
    columns: list[Any] = [per_session.c.rollout_id, per_session.c.arm, func.count(), func.sum(per_session.c.errored),
                          func.sum(spend), func.sum(spend * spend)]
    query = select(*columns).group_by(per_session.c.rollout_id, per_session.c.arm)
    return {(int(rid), arm): (Moments.binary(float(e or 0), float(n)), Moments(float(n), float(total or 0),
                                                                             float(squares or 0)))
            for rid, arm, n, e, total, squares in db.exec(query)}


def _arm_latencies(starts: Mapping[int, float], *, now: float, db: Session
                   ) -> dict[tuple[int, str], list[tuple[float, int]]]:
    """Count latencies in 0.1 ms bins, so the rows grow with distinct latencies, not with calls."""
    # CAST truncates on SQLite and rounds on Postgres: either way (bin + 1) / 10 ms bounds the values above.
    tenth = cast(col(Decision.latency_ms) * 10, Integer)
    query = (select(AgentSession.rollout_id, Decision.arm, tenth, func.count())
             .join(AgentSession, col(AgentSession.id) == Decision.session_id)
             .where(*_live_arms(starts, col(Decision.outcome_at)), col(Decision.outcome_at) <= now,
                    col(Decision.latency_ms).is_not(None))
             .group_by(col(AgentSession.rollout_id), col(Decision.arm), tenth))
    out: dict[tuple[int, str], list[tuple[float, int]]] = defaultdict(list)
    for rid, arm, bin_, count in db.exec(query):
        out[(int(rid or 0), arm)].append(((int(bin_ or 0) + 1) / 10_000, int(count)))
    return out


def _distribution(bins: list[tuple[float, int]]) -> Distribution:
    """Return the latencies' order statistics, each rounded up to its 0.1 ms bin (exact for gate purposes)."""
    ordered = sorted(bins)
    counts = np.cumsum([count for _, count in ordered]).astype(float) if ordered else np.zeros(0)
    return Distribution(tuple(bound for bound, _ in ordered), tuple(counts.tolist()), True)
