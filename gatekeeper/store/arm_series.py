"""Data access for the agent page's charts: the stable arm's live traffic in fixed time buckets. Nothing here commits.

Three grouped queries per rollout, whatever its length: calls and errors per bucket (by outcome
time), sessions and their spend per bucket (by start time), and latencies per bucket counted in
1 ms bins (so the rows grow with distinct latencies, not with calls). Shadow mirrors and twin runs
never count, as in `arm_traffic`.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import BigInteger, Integer, case, cast
from sqlmodel import Session, col, func, select

from gatekeeper.store.models import AgentSession, Decision


@dataclass
class Bucket:
    """One time bucket of an arm's live traffic: counts, spend and a latency histogram (ms, count)."""

    calls: int = 0
    errors: int = 0
    sessions: int = 0
    spend_micros: int = 0
    latencies_ms: list[tuple[int, int]] = field(default_factory=list)


def _live(rollout_id: int, arm: str) -> list[Any]:
    return [AgentSession.rollout_id == rollout_id, AgentSession.arm == arm, AgentSession.environment == "live",
            col(AgentSession.mirror_of).is_(None)]


def _index(column: Any, width_s: float) -> Any:
    """Bucket number of a time: whole milliseconds divided as integers, the same on SQLite and Postgres."""
    return cast(column * 1000, BigInteger) // max(1, round(width_s * 1000))


def arm_buckets(rollout_id: int, *, arm: str, span: tuple[float, float], width_s: float, db: Session
                ) -> dict[int, Bucket]:
    """Return an arm's live traffic over `span` per bucket number (time // width_s): three queries."""
    out: dict[int, Bucket] = defaultdict(Bucket)
    _calls(out, _decided(rollout_id, arm, span), width_s=width_s, db=db)
    _sessions(out, [*_live(rollout_id, arm), AgentSession.started_at >= span[0],
                             AgentSession.started_at <= span[1]], width_s=width_s, db=db)
    _latencies(out, _decided(rollout_id, arm, span), width_s=width_s, db=db)
    return dict(out)


def _decided(rollout_id: int, arm: str, span: tuple[float, float]) -> list[Any]:
    return [*_live(rollout_id, arm), Decision.arm == arm, col(Decision.outcome_at) >= span[0],
            col(Decision.outcome_at) <= span[1]]


def _calls(out: dict[int, Bucket], where: list[Any], *, width_s: float, db: Session) -> None:
    at = _index(col(Decision.outcome_at), width_s)
    errors = func.coalesce(func.sum(case((col(Decision.outcome_status) == "error", 1), else_=0)), 0)
    query = (select(at, func.count(), errors).join(AgentSession, col(AgentSession.id) == Decision.session_id)
             .where(*where).group_by(at))
    for index, n, e in db.exec(query):
        out[int(index)].calls, out[int(index)].errors = int(n), int(e)


def _sessions(out: dict[int, Bucket], where: list[Any], *, width_s: float, db: Session) -> None:
    began = _index(col(AgentSession.started_at), width_s)
    query = (select(began, func.count(), func.coalesce(func.sum(AgentSession.spend_micros), 0))
             .where(*where).group_by(began))
    for index, n, spend in db.exec(query):
        out[int(index)].sessions, out[int(index)].spend_micros = int(n), int(spend)


def _latencies(out: dict[int, Bucket], where: list[Any], *, width_s: float, db: Session) -> None:
    at, ms = _index(col(Decision.outcome_at), width_s), cast(col(Decision.latency_ms), Integer)
    query = (select(at, ms, func.count()).join(AgentSession, col(AgentSession.id) == Decision.session_id)
             .where(*where, col(Decision.latency_ms).is_not(None)).group_by(at, ms))
    for index, bin_ms, n in db.exec(query):
        out[int(index)].latencies_ms.append((int(bin_ms or 0), int(n)))
