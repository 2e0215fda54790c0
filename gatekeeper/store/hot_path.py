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

import contextlib
import operator
import os
import random
import re
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from typing import Any

from gatekeeper.errors import Unavailable
from gatekeeper.store.db import Database

LOCK_WAIT_S = 30.0  # as long as the engine's busy_timeout: a longer wait is an outage
YIELD_FOR_S = 0.001  # wait for the write lock by yielding the CPU this long, then by short sleeps


class Tx:
    """One hot-path transaction: statements with `:name` parameters on a raw cursor.

    On Postgres the transaction runs in psycopg's pipeline mode: `send` queues a statement whose
    answer nobody waits for, and it travels with the next statement that needs one (or with COMMIT),
    so BEGIN rides with the first read and a decision's insert with its COMMIT: fewer round trips.
    """

    def __init__(self, cursor: Any, *, postgres: bool, pipeline: Any = None) -> None:
        self.cursor = cursor
        self.postgres = postgres
        self.pipeline = pipeline

    def one(self, sql: str, params: Mapping[str, Any]) -> Any:
        """Run a statement and return its first row, or None."""
        self.cursor.execute(*_dialect(sql, params, self.postgres))
        return self.cursor.fetchone()

    def all(self, sql: str, params: Mapping[str, Any]) -> list[Any]:
        """Run a statement and return every row."""
        self.cursor.execute(*_dialect(sql, params, self.postgres))
        return list(self.cursor.fetchall())

    def run(self, sql: str, params: Mapping[str, Any]) -> int:
        """Run a statement and return the number of rows it changed."""
        self.cursor.execute(*_dialect(sql, params, self.postgres))
        if self.pipeline is not None:
            self.pipeline.sync()  # the row count is in the answer: wait for it
        return int(self.cursor.rowcount)

    def send(self, sql: str, params: Mapping[str, Any]) -> None:
        """Run a statement whose answer is not needed now (Postgres: queued until the next round trip)."""
        self.cursor.execute(*_dialect(sql, params, self.postgres))


_PARAM = re.compile(r"(?<!:):(\w+)")
_PG_SQL: dict[str, str] = {}
_SQLITE_SQL: dict[str, tuple[str, Callable[[Mapping[str, Any]], tuple[Any, ...]]]] = {}


def param_marks(columns: str) -> str:
    """Return the `:name` parameters of a comma-separated column list."""
    return ", ".join(f":{name.strip()}" for name in columns.split(","))


def _picker(names: list[str]) -> Callable[[Mapping[str, Any]], tuple[Any, ...]]:
    """Return what lists a mapping's values in the statement's order (itemgetter of one name gives a bare value)."""
    if len(names) > 1:
        return operator.itemgetter(*names)
    return lambda found: tuple(found[name] for name in names)


def _dialect(sql: str, params: Mapping[str, Any], postgres: bool) -> tuple[str, Any]:
    """Return the statement and parameters as the driver takes them fastest.

    Postgres gets `%(name)s` and the mapping; SQLite gets `?` and a tuple, which sqlite3 binds in about
    a microsecond less per statement than names looked up in a mapping (it counts on the hot path).
    """
    if postgres:
        found = _PG_SQL.get(sql)
        if found is None:
            found = _PG_SQL[sql] = _PARAM.sub(r"%(\1)s", sql)
        return found, params
    positional = _SQLITE_SQL.get(sql)
    if positional is None:
        positional = _SQLITE_SQL[sql] = (_PARAM.sub("?", sql), _picker(_PARAM.findall(sql)))
    return positional[0], positional[1](params)


class HotPath:
    """Per-thread raw connections for the decision path, opened lazily from the database's engine."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.postgres = not db.is_sqlite
        self.predicted: dict[str, Any] = {}  # session id -> its facts as last read (decisions.py's prediction)
        self._local = threading.local()
        self._checkpointer: _Checkpointer | None = None
        self._lock = threading.Lock()

    def transaction(self) -> Transaction:
        """Return one write transaction: `with hot.transaction() as tx:` commits at the end, rolls back on error."""
        return Transaction(self)

    def statement(self, sql: str, params: Mapping[str, Any]) -> Any:
        """Run one statement on its own (Postgres: autocommit, one round trip); return its first row, or None."""
        connection, cursor = self._opened()
        try:
            connection.autocommit = True  # a flag in psycopg while idle: no round trip of its own
            try:
                cursor.execute(*_dialect(sql, params, self.postgres))
                return cursor.fetchone()
            finally:
                connection.autocommit = False
        except BaseException as exc:
            if _is_outage(exc):
                self.forget()
                raise Unavailable(f"database unavailable: {exc}") from exc
            raise

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
        self.pipeline: Any = None  # psycopg's Pipeline (Postgres), and the context that made it
        self._pipelined: Any = None

    def __enter__(self) -> Tx:
        try:
            self._begin()
        except BaseException as exc:
            self.__exit__(type(exc), exc, None)
            raise
        return Tx(self.cursor, postgres=self.hot.postgres, pipeline=self.pipeline)

    def __exit__(self, _kind: Any, exc: BaseException | None, _tb: Any) -> None:
        if exc is not None:
            self._abandon(exc)
            return  # the exception goes on
        try:
            if self.hot.postgres:
                self.connection.commit()
                self._leave_pipeline()
            else:
                self.cursor.execute("COMMIT")
        except BaseException as failed:
            self._abandon(failed)
            raise

    def _leave_pipeline(self) -> None:
        pipelined, self._pipelined, self.pipeline = self._pipelined, None, None
        if pipelined is not None:
            pipelined.__exit__(None, None, None)

    def _abandon(self, exc: BaseException) -> None:
        """Roll back; a lost Postgres connection is dropped and reported as Unavailable."""
        with contextlib.suppress(Exception):  # an aborted pipeline raises its error again: the first one counts
            self._leave_pipeline()
        self._rollback()
        if _is_outage(exc):
            self.hot.forget()
            raise Unavailable(f"database unavailable: {exc}") from exc

    def _begin(self) -> None:
        if self.hot.postgres:
            # psycopg opens the transaction with the first statement, in the same round trip.
            self._pipelined = self.connection.pipeline()
            self.pipeline = self._pipelined.__enter__()
            return
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
