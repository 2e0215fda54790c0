"""Retention's reads and deletes: what is older than the horizon and not needed, its daily rollups. Nothing commits.

A session is prunable when it started before the cutoff, no approval names it (approvals are
the audit trail and keep their session), and it is not inside an open rollout's current tier
(the gates judge that tier's traffic). Its decisions go with it, after their day's counts are
added to `rollout_days`. A gate evaluation is prunable when it is older than the cutoff, not
inside an open rollout's current tier and not one of the (at most 402) its rollout's chart
shows, so the gate chart of every rollout outlives retention. Transitions and approvals are
never deleted.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Any

from sqlalchemy import bindparam, text
from sqlalchemy.engine import Connection
from sqlmodel import Session

from gatekeeper.core.ladder import TERMINAL_STATES
from gatekeeper.store import dashboard_records
from gatekeeper.store.db import Database, unit_of_work

DAY_S = 86_400
_OPEN = "r.state NOT IN ({})".format(", ".join(f"'{state}'" for state in sorted(TERMINAL_STATES)))

_AGENTS = text("SELECT id FROM agents ORDER BY id")
_PRUNABLE_SESSIONS = text(f"""SELECT s.id FROM sessions s WHERE s.agent_id = :agent AND s.started_at < :cutoff
 AND NOT EXISTS (SELECT 1 FROM approvals p WHERE p.session_id = s.id)
 AND NOT EXISTS (SELECT 1 FROM rollouts r WHERE r.id = s.rollout_id AND {_OPEN} AND s.started_at >= r.tier_started_at)
 ORDER BY s.started_at LIMIT :limit""")
_OLD_EVALUATION_ROLLOUTS = text("""SELECT DISTINCT rollout_id FROM gate_evaluations WHERE agent_id = :agent
 AND at < :cutoff ORDER BY rollout_id""")
_PRUNABLE_EVALUATIONS = text(f"""SELECT g.id FROM gate_evaluations g WHERE g.rollout_id = :rollout AND g.at < :cutoff
 AND NOT EXISTS (SELECT 1 FROM rollouts r WHERE r.id = g.rollout_id AND {_OPEN} AND g.at >= r.tier_started_at)
 ORDER BY g.at""")
_SESSION_DAYS = text("""SELECT agent_id, coalesce(rollout_id, 0), arm, CAST(started_at / :day AS INTEGER) AS d,
 count(*), coalesce(sum(spend_micros), 0) FROM sessions WHERE id IN :ids
 GROUP BY agent_id, coalesce(rollout_id, 0), arm, CAST(started_at / :day AS INTEGER)""").bindparams(
    bindparam("ids", expanding=True))
_DECISION_DAYS = text("""SELECT agent_id, coalesce(rollout_id, 0), arm, CAST(at / :day AS INTEGER) AS d, count(*),
 coalesce(sum(CASE WHEN outcome_status = 'error' THEN 1 ELSE 0 END), 0) FROM decisions WHERE session_id IN :ids
 GROUP BY agent_id, coalesce(rollout_id, 0), arm, CAST(at / :day AS INTEGER)""").bindparams(
    bindparam("ids", expanding=True))
_ADD_DAY = text("""INSERT INTO rollout_days (agent_id, rollout_id, arm, day, sessions, decisions, errors, spend_micros)
 VALUES (:agent_id, :rollout_id, :arm, :day, :sessions, :decisions, :errors, :spend_micros)
 ON CONFLICT (agent_id, rollout_id, arm, day) DO UPDATE SET sessions = rollout_days.sessions + excluded.sessions,
 decisions = rollout_days.decisions + excluded.decisions, errors = rollout_days.errors + excluded.errors,
 spend_micros = rollout_days.spend_micros + excluded.spend_micros""")
_DELETE_DECISIONS = text("DELETE FROM decisions WHERE session_id IN :ids").bindparams(bindparam("ids", expanding=True))
_DELETE_SESSIONS = text("DELETE FROM sessions WHERE id IN :ids").bindparams(bindparam("ids", expanding=True))
_DELETE_EVALUATIONS = text("DELETE FROM gate_evaluations WHERE id IN :ids").bindparams(
    bindparam("ids", expanding=True))
_COUNT_DECISIONS = text("SELECT count(*) FROM decisions WHERE session_id IN :ids").bindparams(
    bindparam("ids", expanding=True))


def agent_ids(*, db: Session) -> list[int]:
    """Return every agent's id, in order."""
    return [int(row[0]) for row in db.execute(_AGENTS)]


def prunable_sessions(agent_id: int, *, cutoff: float, limit: int, db: Session) -> list[str]:
    """Return up to `limit` of an agent's oldest sessions that retention may delete."""
    return [row[0] for row in db.execute(_PRUNABLE_SESSIONS, {"agent": agent_id, "cutoff": cutoff, "limit": limit})]


def rollouts_with_old_evaluations(agent_id: int, *, cutoff: float, db: Session) -> list[int]:
    """Return the agent's rollouts that have gate evaluations older than the cutoff."""
    return [int(row[0]) for row in db.execute(_OLD_EVALUATION_ROLLOUTS, {"agent": agent_id, "cutoff": cutoff})]


def prunable_evaluations(rollout_id: int, *, cutoff: float, db: Session) -> list[int]:
    """Return a rollout's gate evaluations retention may delete, oldest first: all but those its chart shows."""
    charted = set(dashboard_records.charted_evaluations(rollout_id, db=db))
    return [int(row[0]) for row in db.execute(_PRUNABLE_EVALUATIONS, {"rollout": rollout_id, "cutoff": cutoff})
            if int(row[0]) not in charted]


def decision_count(session_ids: Sequence[str], *, db: Session) -> int:
    """Return how many decisions these sessions hold."""
    return int(db.execute(_COUNT_DECISIONS, {"ids": list(session_ids)}).scalar_one()) if session_ids else 0


def roll_up(session_ids: Sequence[str], *, db: Session) -> None:
    """Add these sessions' and their decisions' daily counts and spend to `rollout_days`."""
    if not session_ids:
        return
    days: dict[tuple[int, int, str, int], dict[str, Any]] = {}
    for agent, rollout, arm, day, n, spend in db.execute(_SESSION_DAYS, {"ids": list(session_ids), "day": DAY_S}):
        _day(days, agent, rollout, arm, day).update(sessions=int(n), spend_micros=int(spend))
    for agent, rollout, arm, day, n, errors in db.execute(_DECISION_DAYS, {"ids": list(session_ids), "day": DAY_S}):
        _day(days, agent, rollout, arm, day).update(decisions=int(n), errors=int(errors))
    db.execute(_ADD_DAY, list(days.values()))


def _day(days: dict[tuple[int, int, str, int], dict[str, Any]], agent: int, rollout: int, arm: str, day: int
         ) -> dict[str, Any]:
    key = (int(agent), int(rollout), str(arm), int(day))
    if key not in days:
        days[key] = {"agent_id": key[0], "rollout_id": key[1], "arm": key[2], "day": key[3], "sessions": 0,
                     "decisions": 0, "errors": 0, "spend_micros": 0}
    return days[key]


def delete_sessions(session_ids: Sequence[str], *, db: Session) -> int:
    """Delete these sessions and their decisions; return how many decisions went."""
    if not session_ids:
        return 0
    gone = db.execute(_DELETE_DECISIONS, {"ids": list(session_ids)}).rowcount  # type: ignore[attr-defined]
    db.execute(_DELETE_SESSIONS, {"ids": list(session_ids)})
    return int(gone or 0)


def delete_evaluations(evaluation_ids: Sequence[int], *, db: Session) -> None:
    """Delete these gate evaluations (their counts in `gate_evaluation_counts` stay: counters never fall)."""
    if evaluation_ids:
        db.execute(_DELETE_EVALUATIONS, {"ids": list(evaluation_ids)})


class Batches:
    """Pruning's write transactions, all on one connection that checkpoints the WAL only when asked.

    On SQLite a commit that leaves more than 1,000 pages in the WAL copies them into the
    database file (and syncs it) right away, inside the COMMIT call: a batch then seemed to
    hold the write lock longer than it did and the next one was made smaller than needed.
    Here the copy happens in `checkpoint`, during the pause between batches (PASSIVE: it never
    waits for, nor blocks, a decision), and the connection goes back to the pool as it came.
    """

    def __init__(self, connection: Connection, *, sqlite: bool) -> None:
        self.connection = connection
        self.sqlite = sqlite

    def transaction(self) -> AbstractContextManager[Session]:
        """Return a unit of work on the pruning connection; commit on success, roll back on error."""
        return unit_of_work(self.connection)

    def checkpoint(self) -> None:
        """Copy what the WAL holds into the database file, as far as readers allow (SQLite; else nothing)."""
        if self.sqlite:
            self._driver().execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()

    def _driver(self) -> Any:
        return self.connection.connection.driver_connection


@contextmanager
def batches(database: Database) -> Iterator[Batches]:
    """Yield pruning's `Batches` on a connection of the pool whose automatic WAL checkpoint is off meanwhile."""
    with database.engine.connect() as connection:
        found = Batches(connection, sqlite=database.is_sqlite)
        if not database.is_sqlite:
            yield found
            return
        driver = found._driver()  # PRAGMAs on the driver: the engine's BEGIN IMMEDIATE is not wanted here
        before = int(driver.execute("PRAGMA wal_autocheckpoint").fetchone()[0])
        driver.execute("PRAGMA wal_autocheckpoint=0")
        try:
            yield found
        finally:
            driver.execute(f"PRAGMA wal_autocheckpoint={before}")
