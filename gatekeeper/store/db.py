"""The one home of database sessions: the engine, the unit of work and schema upgrades.

SQLite runs in WAL mode and every write transaction starts with `BEGIN IMMEDIATE`, so two
processes never interleave a read and a write of the same counters; `synchronous=NORMAL`
keeps a commit durable across a process crash without an fsync per decision (an OS crash
may lose the last commits; set GATEKEEPER_SQLITE_SYNCHRONOUS=FULL to rule that out too).
Postgres gets a pooled engine; its row-level atomicity comes from the statements themselves.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import event, inspect, text
from sqlalchemy.engine import Engine
from sqlmodel import Session, SQLModel, create_engine, select

from gatekeeper.errors import Unavailable
from gatekeeper.store import models


class Database:
    """Own the engine; hand out units of work that commit once at their end."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        self.engine = _make_engine(url)

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """Yield a session in one transaction; commit on success, roll back on error."""
        with Session(self.engine, expire_on_commit=False) as session:
            try:
                yield session
                session.commit()
            except BaseException:
                session.rollback()
                raise

    @contextmanager
    def reading(self) -> Iterator[Session]:
        """Yield a session for reads only (no write lock on SQLite); never commits."""
        with Session(self.engine, expire_on_commit=False) as session:
            session.connection(execution_options={"gatekeeper_read_only": True})
            try:
                yield session
            finally:
                session.rollback()

    def upgrade(self) -> int:
        """Create or upgrade the schema; safe to run any number of times. Return the version."""
        if "schema_version" in self.table_names():
            with self.reading() as session:
                _refuse_newer(session.get(models.SchemaVersion, 1))
        SQLModel.metadata.create_all(self.engine)
        with self.transaction() as session:  # the row lock (BEGIN IMMEDIATE on SQLite) serialises upgraders
            row = session.get(models.SchemaVersion, 1, with_for_update=True)
            _refuse_newer(row)
            # No row: create_all just made every table and index at the current version.
            for version in range(row.version + 1 if row else models.SCHEMA_VERSION + 1, models.SCHEMA_VERSION + 1):
                for step in models.MIGRATIONS[version]:
                    session.execute(text(step))
            session.merge(models.SchemaVersion(id=1, version=models.SCHEMA_VERSION))
        return models.SCHEMA_VERSION

    def is_ready(self) -> bool:
        """Return whether the database answers and has the schema."""
        try:
            with self.reading() as session:
                session.exec(select(models.SchemaVersion)).first()
            return True
        except Exception:  # noqa: BLE001 - readiness reports any failure as not ready
            return False

    def table_names(self) -> list[str]:
        """Return the tables present in the database."""
        return sorted(inspect(self.engine).get_table_names())

    def dispose(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()


def _refuse_newer(row: models.SchemaVersion | None) -> None:
    if row is not None and row.version > models.SCHEMA_VERSION:
        raise Unavailable(f"database schema {row.version} is newer than this Gatekeeper "
                          f"({models.SCHEMA_VERSION}); upgrade Gatekeeper")


def _make_engine(url: str) -> Engine:
    if not url.startswith("sqlite"):
        return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)
    engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
    synchronous = os.environ.get("GATEKEEPER_SQLITE_SYNCHRONOUS", "NORMAL").upper()
    if synchronous not in ("NORMAL", "FULL"):
        raise ValueError("GATEKEEPER_SQLITE_SYNCHRONOUS must be NORMAL or FULL")

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control from the driver so that BEGIN can be IMMEDIATE.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        # New files only: 1 KiB pages make a decision's commit write and checksum 4x fewer WAL bytes
        # (commit 32 -> 21 µs); existing files keep the page size they were created with.
        cursor.execute("PRAGMA page_size=1024")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA synchronous={synchronous}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        read_only = connection.get_execution_options().get("gatekeeper_read_only", False)
        connection.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")

    return engine

