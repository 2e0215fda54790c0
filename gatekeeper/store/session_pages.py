"""Pages of an agent's sessions, newest first, for the session listing. Nothing here commits or writes.

A page walks ix_sessions_agent_started (agent_id, started_at) backwards from its cursor, or for twin
runs ix_sessions_agent_twin_started, which holds no live session. Without filters it reads `limit`
rows. With filters it looks at no more than SCAN_ROWS sessions of that index and keeps those that
match: a rare filter (errors after months of clean traffic) gives a short or empty page with a cursor
to go on from, never a request that walks the whole history.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import literal_column, or_
from sqlmodel import Session, col, func, select

from gatekeeper.store.models import AgentSession

SCAN_ROWS = 5000


@dataclass(frozen=True)
class SessionFilter:
    """What a listed session must be; None: any."""

    environment: str | None = None
    arm: str | None = None
    status: str | None = None
    scenario: str | None = None

    def given(self) -> dict[str, str]:
        """Return the filters given, column name to value."""
        wanted = {"environment": self.environment, "arm": self.arm, "status": self.status,
                  "scenario": self.scenario}
        return {name: value for name, value in wanted.items() if value is not None}


Key = tuple[float, str]  # (started_at, id): the listing's order, newest first


def agent_sessions(agent_id: int, *, limit: int, before: Key | None, where: SessionFilter, db: Session
                   ) -> tuple[list[AgentSession], Key | None]:
    """Return one page of an agent's sessions, newest first, and the cursor of the next page (None: no more)."""
    if where.given():
        return _filtered(agent_id, limit=limit, before=before, where=where, db=db)
    order = (col(AgentSession.started_at).desc(), col(AgentSession.id).desc())
    rows = list(db.exec(_older(select(AgentSession), agent_id, before).order_by(*order).limit(limit + 1)))
    return rows[:limit], _key(rows[limit - 1]) if len(rows) > limit else None


def _filtered(agent_id: int, *, limit: int, before: Key | None, where: SessionFilter, db: Session
              ) -> tuple[list[AgentSession], Key | None]:
    given = where.given()
    columns = [AgentSession.id, AgentSession.started_at, *(getattr(AgentSession, name) for name in given)]
    newest = _older(select(*columns), agent_id, before)
    if where.environment == "twin":  # a literal, as the partial index's own condition is: the planner matches it
        newest = newest.where(col(AgentSession.environment) == literal_column("'twin'"))
    # The filters apply to the window only, never to the table: no planner may start from a scan of sessions.
    window = (newest.order_by(col(AgentSession.started_at).desc(), col(AgentSession.id).desc())
              .limit(SCAN_ROWS).subquery())
    keys = list(db.exec(select(window.c.id, window.c.started_at)
                        .where(*(window.c[name] == value for name, value in given.items()))
                        .order_by(window.c.started_at.desc(), window.c.id.desc()).limit(limit + 1)))
    found = _rows([key for key, _ in keys[:limit]], db=db)
    if len(keys) > limit:
        return found, (float(keys[limit - 1][1]), str(keys[limit - 1][0]))
    seen, oldest_at = db.exec(select(func.count(), func.min(window.c.started_at))).one()
    if seen < SCAN_ROWS:
        return found, None
    last = db.exec(select(window.c.started_at, window.c.id).where(window.c.started_at == oldest_at)
                   .order_by(window.c.id).limit(1)).one()
    return found, (float(last[0]), str(last[1]))


def _rows(ids: list[str], *, db: Session) -> list[AgentSession]:
    if not ids:
        return []
    got = {row.id: row for row in db.exec(select(AgentSession).where(col(AgentSession.id).in_(ids)))}
    return [got[key] for key in ids if key in got]  # one pruned since the keys were read is left out


def _older(query: Any, agent_id: int, before: Key | None) -> Any:
    query = query.where(AgentSession.agent_id == agent_id)
    if before is None:
        return query
    # The range on started_at uses the index; the tie on id is checked on the rows of that one instant.
    return query.where(col(AgentSession.started_at) <= before[0],
                       or_(col(AgentSession.started_at) < before[0], col(AgentSession.id) < before[1]))


def _key(row: AgentSession) -> Key:
    return (row.started_at, row.id)
