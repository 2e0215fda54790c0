"""The one home of the database: the engine, the unit of work (`db`, an ORM Session), schema upgrades.

SQLite runs in WAL mode and every write transaction starts with `BEGIN IMMEDIATE`, so two
processes never interleave a read and a write of the same counters; `synchronous=NORMAL`
keeps a commit durable across a process crash without an fsync per decision (an OS crash
may lose the last commits; set GATEKEEPER_SQLITE_SYNCHRONOUS=FULL to rule that out too).
Postgres (on psycopg 3) gets a pooled engine; its row-level atomicity comes from the statements themselves.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

from sqlalchemy import event, inspect
from sqlalchemy.engine import Connection, Engine, make_url
from sqlmodel import Session, create_engine

from gatekeeper.config import database_url
from gatekeeper.store import schema


@contextmanager
def unit_of_work(bind: Engine | Connection) -> Iterator[Session]:
    """Yield an ORM Session on `bind` in one transaction; commit on success, roll back on error."""
    with Session(bind=bind, expire_on_commit=False) as db:
        try:
            yield db
            db.commit()
        except BaseException:
            db.rollback()
            raise


class Database:
    """Own the engine; hand out units of work that commit once at their end."""

    def __init__(self, url: str) -> None:
        self.url = database_url(url)  # Postgres URLs of any spelling use psycopg 3; ConfigError if unusable
        self.is_sqlite = self.url.startswith("sqlite")
        self.engine = _make_engine(self.url)

    @property
    def shown_url(self) -> str:
        """Return the URL with its password masked, for messages."""
        return make_url(self.url).render_as_string(hide_password=True)

    def transaction(self) -> AbstractContextManager[Session]:
        """Return a unit of work (an ORM Session) in one transaction; commit on success, roll back on error."""
        return unit_of_work(self.engine)

    @contextmanager
    def reading(self) -> Iterator[Session]:
        """Yield a unit of work for reads only (no write lock on SQLite); never commits."""
        with Session(self.engine, expire_on_commit=False) as db:
            db.connection(execution_options={"gatekeeper_read_only": True})
            try:
                yield db
            finally:
                db.rollback()

    def upgrade(self) -> str:
        """Create or upgrade the schema under a lock (store/schema.py), safe to run at once; return its revision."""
        return schema.upgrade(self.engine)

    def is_ready(self) -> bool:
        """Return whether the database answers and has this Gatekeeper's schema."""
        try:
            with self.reading() as db:
                return schema.current(db.connection()) == schema.head()
        except Exception:  # noqa: BLE001 - readiness reports any failure as not ready
            return False

    def table_names(self) -> list[str]:
        """Return the tables present in the database."""
        return sorted(inspect(self.engine).get_table_names())

    def dispose(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()


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

