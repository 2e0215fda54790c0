"""Data access for sessions, decisions and approvals. Nothing here commits.

The decision path runs on `HotPath`: one raw DB-API connection per thread, opened from the
same engine (so it gets the same connect-time settings) and kept out of the pool, because a
pooled ORM session costs about 250 µs more per decision than the raw statements.
Its statements are plain SQL with `:name` parameters that run unchanged on SQLite and
Postgres. SQLite write transactions start with `BEGIN IMMEDIATE`; when another process holds
the write lock we yield the CPU and retry (another decision commits within ~100 µs) instead of
SQLite's busy handler, which sleeps 1 ms or more and would dominate the p99. For the same
reason these connections never checkpoint the WAL: an inline checkpoint syncs megabytes to
disk and put the server-side p99 at ~5 ms; a background thread per process does it once a
second instead (pages written many times in that second are copied once).
Everything off the decision path uses the ORM `Session`.
"""

from __future__ import annotations

import os
import random
import re
import sqlite3
import threading
import time
import weakref
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from sqlalchemy import case, or_
from sqlmodel import Session, col, func, select, update

from gatekeeper.errors import NotFound, Unavailable
from gatekeeper.store.db import Database
from gatekeeper.store.models import AgentSession, Approval, Decision

LOCK_WAIT_S = 30.0  # as long as the engine's busy_timeout: a longer wait is an outage
YIELD_FOR_S = 0.001  # wait for the write lock by yielding the CPU this long, then by short sleeps


class Tx:
    """One hot-path transaction: statements with `:name` parameters on a raw cursor."""

    def __init__(self, cursor: Any, *, postgres: bool) -> None:
        self.cursor = cursor
        self.postgres = postgres

    def one(self, sql: str, params: Mapping[str, Any]) -> Any:
        """Run a statement and return its first row, or None."""
        self.cursor.execute(_dialect(sql, self.postgres), params)
        return self.cursor.fetchone()

    def all(self, sql: str, params: Mapping[str, Any]) -> list[Any]:
        """Run a statement and return every row."""
        self.cursor.execute(_dialect(sql, self.postgres), params)
        return list(self.cursor.fetchall())

    def run(self, sql: str, params: Mapping[str, Any]) -> int:
        """Run a statement and return the number of rows it changed."""
        self.cursor.execute(_dialect(sql, self.postgres), params)
        return int(self.cursor.rowcount)


_PARAM = re.compile(r"(?<!:):(\w+)")
_PG_SQL: dict[str, str] = {}


def _marks(columns: str) -> str:
    """Return the `:name` parameters of a comma-separated column list."""
    return ", ".join(f":{name.strip()}" for name in columns.split(","))


def _dialect(sql: str, postgres: bool) -> str:
    if not postgres:
        return sql
    found = _PG_SQL.get(sql)
    if found is None:
        found = _PG_SQL[sql] = _PARAM.sub(r"%(\1)s", sql)
    return found


class HotPath:
    """Per-thread raw connections for the decision path, opened lazily from the database's engine."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.postgres = not db.is_sqlite
        self._local = threading.local()
        self._checkpointer: _Checkpointer | None = None
        self._lock = threading.Lock()

    def transaction(self) -> Transaction:
        """Return one write transaction: `with hot.transaction() as tx:` commits at the end, rolls back on error."""
        return Transaction(self)

    def close(self) -> None:
        """Stop the checkpointer and close this thread's connection (others close with their threads)."""
        if self._checkpointer is not None:
            self._checkpointer.stop()
        opened = getattr(self._local, "opened", None)
        if opened is not None:
            opened[0].close()
            self.forget()

    def forget(self) -> None:
        """Drop this thread's connection (it broke); the next transaction opens a new one."""
        self._local.opened = None

    def _opened(self) -> tuple[Any, Any]:
        """Return this thread's connection and its cursor, kept for the thread's life."""
        found = getattr(self._local, "opened", None)
        if found is not None:
            return found
        connection: Any = _open(self.db)
        if not self.postgres:
            # Decisions never checkpoint the WAL themselves: a checkpoint syncs megabytes to disk.
            connection.execute("PRAGMA wal_autocheckpoint=0")
            with self._lock:
                if self._checkpointer is None:
                    self._checkpointer = _Checkpointer(self.db)
                    weakref.finalize(self, self._checkpointer.stop)
        self._local.opened = (connection, connection.cursor())
        return self._local.opened


class Transaction:
    """One write transaction of the hot path; a class rather than a generator, as it runs per decision."""

    def __init__(self, hot: HotPath) -> None:
        self.hot = hot
        self.connection, self.cursor = hot._opened()

    def __enter__(self) -> Tx:
        try:
            self._begin()
        except BaseException as exc:
            self.__exit__(type(exc), exc, None)
            raise
        return Tx(self.cursor, postgres=self.hot.postgres)

    def __exit__(self, _kind: Any, exc: BaseException | None, _tb: Any) -> None:
        if exc is not None:
            self._abandon(exc)
            return  # the exception goes on
        try:
            self.connection.commit() if self.hot.postgres else self.cursor.execute("COMMIT")
        except BaseException as failed:
            self._abandon(failed)
            raise

    def _abandon(self, exc: BaseException) -> None:
        """Roll back; a lost Postgres connection is dropped and reported as Unavailable."""
        self._rollback()
        if _is_outage(exc):
            self.hot.forget()
            raise Unavailable(f"database unavailable: {exc}") from exc

    def _begin(self) -> None:
        if self.hot.postgres:
            return  # psycopg opens the transaction with the first statement
        started = time.monotonic()
        while True:
            try:
                self.cursor.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc):
                    raise
                waited = time.monotonic() - started
                if waited > LOCK_WAIT_S:
                    raise Unavailable("the database stayed locked for 30 s") from exc
                if waited < YIELD_FOR_S:
                    os.sched_yield()  # another decision commits within ~100 µs; a sleep would overshoot
                else:
                    time.sleep(random.uniform(50e-6, 150e-6))

    def _rollback(self) -> None:
        if not self.hot.postgres and not self.connection.in_transaction:
            return  # BEGIN itself failed
        try:
            self.connection.rollback() if self.hot.postgres else self.connection.execute("ROLLBACK")
        except Exception:  # noqa: BLE001 - the connection is broken; the next call opens a new one
            self.hot.forget()


def _open(db: Database) -> Any:
    pooled = db.engine.raw_connection()
    connection: Any = pooled.driver_connection
    pooled.detach()  # ours for the thread's life; the pool's checkout costs would be paid per call
    if db.is_sqlite:
        connection.execute("PRAGMA busy_timeout=0")
    return connection


class _Checkpointer:
    """Copy the SQLite WAL back into the database file every second, off the request path.

    PASSIVE checkpoints never block writers or readers; when another process is already
    checkpointing, this one skips a turn. The engine's other connections keep SQLite's
    automatic checkpoint as a safety net, should this thread ever stop.
    """

    INTERVAL_S = 1.0

    def __init__(self, db: Database) -> None:
        self._stopped = threading.Event()
        self._connection = _open(db)
        threading.Thread(target=self._run, name="gatekeeper-checkpoint", daemon=True).start()

    def stop(self) -> None:
        """Ask the thread to close its connection and end."""
        self._stopped.set()

    def _run(self) -> None:
        try:
            while not self._stopped.wait(self.INTERVAL_S):
                try:
                    self._connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                except sqlite3.OperationalError:
                    continue  # busy (another process checkpoints) or the file went away: try again later
        finally:
            self._connection.close()


def _is_outage(exc: BaseException) -> bool:
    # psycopg 3 raises subclasses (AdminShutdown for a terminated backend), so look along the MRO.
    return any(kind.__module__.startswith("psycopg") and kind.__name__ in ("OperationalError", "InterfaceError")
               for kind in type(exc).__mro__)


# -- the decision path (raw statements) ------------------------------------------------------


class SessionFacts(NamedTuple):
    """A session row joined with its agent and rollout, as one decision needs it (a tuple: built per decision)."""

    id: str
    agent_id: int
    agent: str
    policy: str
    rollout_id: int | None
    version: str
    arm: str
    environment: str
    mirror: bool  # 0 or 1 on SQLite
    status: str
    cap_tool_calls: int
    cap_spend_micros: int
    tool_calls: int
    spend_micros: int
    rollout_stage: str | None
    rollout_state: str | None


_LOAD = """SELECT :id, s.agent_id, a.name, a.policy, s.rollout_id, s.version, s.arm, s.environment,
 s.mirror_of IS NOT NULL, s.status, s.cap_tool_calls, s.cap_spend_micros, s.tool_calls, s.spend_micros, r.stage, r.state
 FROM sessions s JOIN agents a ON a.id = s.agent_id LEFT JOIN rollouts r ON r.id = s.rollout_id
 WHERE s.id = :id"""


def load_session(tx: Tx, session_id: str) -> SessionFacts:
    """Return the facts of a session, or raise NotFound."""
    row = tx.one(_LOAD, {"id": session_id})
    if row is None:
        raise NotFound(f"no session {session_id!r}", field="session_id")
    return SessionFacts(*row)


def lock_session(tx: Tx, session_id: str) -> None:
    """Serialise decisions of one session on Postgres (SQLite's BEGIN IMMEDIATE already does)."""
    if tx.postgres:
        tx.one("SELECT id FROM sessions WHERE id = :id FOR UPDATE", {"id": session_id})


_RESERVE = """UPDATE sessions SET tool_calls = tool_calls + 1, spend_micros = spend_micros + :cost
 WHERE id = :id AND status = 'open' AND tool_calls < cap_tool_calls AND spend_micros + :cost <= cap_spend_micros
 RETURNING tool_calls, spend_micros"""


def reserve(tx: Tx, session_id: str, *, cost_micros: int) -> tuple[int, int] | None:
    """Take one call and the cost from the session's caps in one statement; None when they refuse."""
    row = tx.one(_RESERVE, {"id": session_id, "cost": cost_micros})
    return None if row is None else (int(row[0]), int(row[1]))


def counters(tx: Tx, session_id: str) -> tuple[int, int]:
    """Return the session's tool calls and spend as they stand."""
    row = tx.one("SELECT tool_calls, spend_micros FROM sessions WHERE id = :id", {"id": session_id})
    return int(row[0]), int(row[1])


def ran_counts(tx: Tx, session_id: str, tools: Iterable[str]) -> dict[str, int]:
    """Return how often each of `tools` ran (or, shadowed, would have) in the session."""
    names = sorted(tools)
    params: dict[str, Any] = {"id": session_id, **{f"t{i}": tool for i, tool in enumerate(names)}}
    marks = ", ".join(f":t{i}" for i in range(len(names)))
    rows = tx.all(f"SELECT tool, count(*) FROM decisions WHERE session_id = :id AND tool IN ({marks})"
                  " AND (verdict = 'allow' OR would_verdict = 'allow') GROUP BY tool", params)
    return {tool: int(count) for tool, count in rows}


@dataclass(frozen=True)
class ApprovalFacts:
    """An approval as a repeated decision needs it."""

    id: str
    session_id: str
    tool: str
    cost_micros: int
    state: str
    expires_at: float
    consumed: bool
    arguments_digest: str | None = None


def load_approval(tx: Tx, approval_id: str) -> ApprovalFacts | None:
    """Return an approval, locked on Postgres until the transaction ends."""
    sql = ("SELECT session_id, tool, cost_micros, state, expires_at, consumed_at, arguments_digest FROM approvals"
           " WHERE id = :id" + (" FOR UPDATE" if tx.postgres else ""))
    row = tx.one(sql, {"id": approval_id})
    if row is None:
        return None
    return ApprovalFacts(approval_id, row[0], row[1], int(row[2]), row[3], float(row[4]), row[5] is not None,
                         row[6])


def expire_approval(tx: Tx, approval_id: str) -> None:
    """Mark a pending approval expired."""
    tx.run("UPDATE approvals SET state = 'expired' WHERE id = :id AND state = 'pending'", {"id": approval_id})


def consume_approval(tx: Tx, approval_id: str, *, now: float) -> bool:
    """Spend an approved approval once; False when it was already spent."""
    return tx.run("UPDATE approvals SET consumed_at = :now WHERE id = :id AND state = 'approved'"
                  " AND consumed_at IS NULL", {"id": approval_id, "now": now}) == 1


_INSERT_APPROVAL = """INSERT INTO approvals (id, agent_id, session_id, rollout_id, version, tool, tool_class,
 cost_micros, preview, stage, arguments, arguments_digest, state, created_at, expires_at) VALUES (:id, :agent_id,
 :session_id, :rollout_id, :version, :tool, :tool_class, :cost_micros, :preview, :stage, :arguments,
 :arguments_digest, 'pending', :created_at, :expires_at)"""


def insert_approval(tx: Tx, values: Mapping[str, Any]) -> None:
    """Open a pending approval (keys: the columns of `_INSERT_APPROVAL`)."""
    tx.run(_INSERT_APPROVAL, values)


_DECISION_COLUMNS = ("id, session_id, agent_id, rollout_id, version, arm, stage, tool, tool_class, cost_micros,"
                     " verdict, reason, would_verdict, would_reason, approval_id, preview, at")
_INSERT_DECISION = f"INSERT INTO decisions ({_DECISION_COLUMNS}) VALUES ({_marks(_DECISION_COLUMNS)})"
# Arguments and a request id (with the answer's budget, for retries) take a wider row; the common
# call without them keeps the narrow statement, which costs measurably less per decision.
_RETRY_COLUMNS = "arguments, arguments_digest, request_id, remaining_tool_calls, remaining_spend_micros"
_INSERT_FULL_DECISION = (f"INSERT INTO decisions ({_DECISION_COLUMNS}, {_RETRY_COLUMNS})"
                         f" VALUES ({_marks(_DECISION_COLUMNS)}, {_marks(_RETRY_COLUMNS)})")


def insert_decision(tx: Tx, values: Mapping[str, Any]) -> None:
    """Record one verdict (keys: `_DECISION_COLUMNS`, and all of `_RETRY_COLUMNS` or none)."""
    tx.run(_INSERT_FULL_DECISION if "request_id" in values else _INSERT_DECISION, values)


class FirstAnswer(NamedTuple):
    """The decision a request id was first answered with, as a retry returns it."""

    decision_id: str
    tool: str
    cost_micros: int
    arguments_digest: str | None
    stage: str | None
    verdict: str
    reason: str
    approval_id: str | None
    remaining_tool_calls: int | None
    remaining_spend_micros: int | None


_FIRST_ANSWER = """SELECT id, tool, cost_micros, arguments_digest, stage, verdict, reason, approval_id,
 remaining_tool_calls, remaining_spend_micros FROM decisions
 WHERE session_id = :session_id AND request_id = :request_id AND request_id IS NOT NULL"""


def first_answer(tx: Tx, session_id: str, request_id: str) -> FirstAnswer | None:
    """Return the decision a session's request id was answered with, if any (the unique index finds it)."""
    row = tx.one(_FIRST_ANSWER, {"session_id": session_id, "request_id": request_id})
    return None if row is None else FirstAnswer(*row)


def is_duplicate(exc: BaseException) -> bool:
    """Return whether a failed statement broke a unique index (sqlite3, psycopg2 and psycopg alike)."""
    return type(exc).__name__ in ("IntegrityError", "UniqueViolation")


# -- sessions, outcomes and approvals off the decision path (ORM) ------------------------------


def get_session(session: Session, session_id: str) -> AgentSession:
    """Return a session row, or raise NotFound."""
    row = session.get(AgentSession, session_id)
    if row is None:
        raise NotFound(f"no session {session_id!r}", field="session_id")
    return row


def get_decision(session: Session, decision_id: str) -> Decision:
    """Return a decision row, or raise NotFound."""
    row = session.get(Decision, decision_id)
    if row is None:
        raise NotFound(f"no decision {decision_id!r}", field="decision_id")
    return row


def record_outcome(session: Session, decision_id: str, *, status: str, actual_micros: int,
                   latency_ms: float | None, overrun_micros: int | None, now: float) -> bool:
    """Store a decision's outcome (and its overrun, if any) once; False when it already had one."""
    changed = session.execute(
        update(Decision).where(col(Decision.id) == decision_id, col(Decision.outcome_status).is_(None))
        .values(outcome_status=status, actual_cost_micros=actual_micros, latency_ms=latency_ms, outcome_at=now,
                overrun_micros=overrun_micros))
    return int(changed.rowcount) == 1  # type: ignore[attr-defined]


def settle(session: Session, session_id: str, *, delta_micros: int) -> None:
    """Replace a reservation's estimate by the actual cost: add the difference to the spend."""
    if delta_micros:
        session.execute(update(AgentSession).where(col(AgentSession.id) == session_id)
                        .values(spend_micros=AgentSession.spend_micros + delta_micros))


def end_session(session: Session, session_id: str, *, status: str, passed: bool | None, now: float) -> bool:
    """Close an open session; False when it was already closed."""
    changed = session.execute(
        update(AgentSession).where(col(AgentSession.id) == session_id, col(AgentSession.status) == "open")
        .values(status=status, passed=passed, ended_at=now))
    return int(changed.rowcount) == 1  # type: ignore[attr-defined]


def candidate_outcomes(session: Session, rollout_id: int, *, since: float) -> tuple[int, int]:
    """Return (outcomes, errors) of the rollout's live candidate calls reported since `since`."""
    errors = func.sum(case((col(Decision.outcome_status) == "error", 1), else_=0))
    row = session.exec(select(func.count(), errors).where(
        Decision.rollout_id == rollout_id, Decision.arm == "candidate", col(Decision.outcome_at) >= since,
        col(Decision.stage) != "twin")).one()
    return int(row[0] or 0), int(row[1] or 0)


def decisions_of(session: Session, session_id: str) -> list[Decision]:
    """Return a session's decisions in the order they were asked."""
    query = select(Decision).where(Decision.session_id == session_id).order_by(col(Decision.at), col(Decision.id))
    return list(session.exec(query))


def expire_due_approvals(session: Session, *, now: float) -> None:
    """Mark every pending approval whose time ran out as expired."""
    session.execute(update(Approval).where(col(Approval.state) == "pending", col(Approval.expires_at) <= now)
                    .values(state="expired"))


def list_approvals(session: Session, *, state: str | None, agent_id: int | None = None) -> list[Approval]:
    """Return approvals, newest first, optionally of one state and agent."""
    query = select(Approval).order_by(col(Approval.created_at).desc())
    if state is not None:
        query = query.where(Approval.state == state)
    if agent_id is not None:
        query = query.where(Approval.agent_id == agent_id)
    return list(session.exec(query.limit(500)))


def get_approval(session: Session, approval_id: str, *, for_update: bool = False) -> Approval:
    """Return an approval, or raise NotFound."""
    query = select(Approval).where(Approval.id == approval_id)
    found = session.exec(query.with_for_update() if for_update else query).first()
    if found is None:
        raise NotFound(f"no approval {approval_id!r}", field="approval_id")
    return found


def cancel_session_approvals(session: Session, session_id: str, *, reason: str, now: float) -> int:
    """Cancel the pending approvals of one session; return how many."""
    return _cancel(session, [col(Approval.session_id) == session_id], reason=reason, now=now)


def cancel_rollout_approvals(session: Session, rollout_id: int, *, keep_stage: str | None, reason: str,
                             now: float) -> int:
    """Cancel a rollout's pending approvals, except those asked in `keep_stage` (None: all); return how many."""
    where = [col(Approval.rollout_id) == rollout_id]
    if keep_stage is not None:
        where.append(or_(col(Approval.stage).is_(None), col(Approval.stage) != keep_stage))
    return _cancel(session, where, reason=reason, now=now)


def _cancel(session: Session, where: list[Any], *, reason: str, now: float) -> int:
    changed = session.execute(update(Approval).where(col(Approval.state) == "pending", *where)
                              .values(state="cancelled", decided_at=now, decision_reason=reason))
    return int(changed.rowcount)  # type: ignore[attr-defined]
