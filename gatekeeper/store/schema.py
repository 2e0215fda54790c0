"""The schema moves by migration: the Alembic revisions in store/migrations/, run under a lock.

`upgrade` takes a lock before it looks at the schema, so any number of servers and `db upgrade`
runs may start at once, even on an empty database. On Postgres the lock is a session-level
advisory lock held on a connection of its own; on SQLite it is the upgrade's own transaction,
which begins IMMEDIATE and so holds the write lock from the first look at the schema to the
commit. Inside that one transaction:

1. a revision this code does not know is refused (the database is newer than this Gatekeeper),
   and so are Gatekeeper tables that carry no revision at all;
2. a database made before Alembic (the hand-made `schema_version` table, at version 1 or 2) is
   brought to schema 2, stamped at revision 0001, and its old table is dropped;
3. every revision up to head runs.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, inspect, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlmodel.sql.sqltypes import AutoString

from gatekeeper.errors import Unavailable

MIGRATIONS = Path(__file__).with_name("migrations")
# pg_advisory_lock key of schema upgrades ("gk-schema"); the scheduler's leader lock uses another.
UPGRADE_LOCK_KEY = 0x676B_2D73_6368_656D
LOCK_TIMEOUT = "120s"  # an upgrade waiting longer than this for another one reports an outage
SQLITE_LOCK_WAIT_S = 120.0  # the same wait on SQLite, whose write lock is the upgrade's own transaction

LEGACY_TABLE = "schema_version"  # the hand-made version table Alembic replaced
LEGACY_REVISION = "0001"  # what schema_version 2 is, exactly
# What the hand-made upgrade ran to bring a database to each version (version 1 -> 2).
LEGACY_STEPS: dict[int, tuple[str, ...]] = {
    2: ("DROP INDEX ix_decisions_rollout_arm_outcome",
        "CREATE INDEX ix_decisions_rollout_arm_outcome ON decisions (rollout_id, arm, outcome_at)"
        " WHERE outcome_at IS NOT NULL"),
}
LEGACY_VERSION = max(LEGACY_STEPS)


def alembic_config(connection: Connection | None = None, *, script_location: Path = MIGRATIONS) -> Config:
    """Return an Alembic configuration for the packaged migrations, running on `connection`."""
    config = Config()
    config.set_main_option("script_location", str(script_location))
    config.set_main_option("file_template", "%%(rev)s_%%(slug)s")
    config.attributes["connection"] = connection
    return config


@functools.cache
def _script(script_location: Path = MIGRATIONS) -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config(script_location=script_location))


def head(script_location: Path = MIGRATIONS) -> str:
    """Return the newest revision this Gatekeeper knows."""
    found = _script(script_location).get_current_head()
    assert found is not None, f"no migrations in {script_location}"
    return found


def upgrade(engine: Engine, *, script_location: Path = MIGRATIONS) -> str:
    """Bring the schema to head under the upgrade lock; return the head revision."""
    deadline = time.monotonic() + SQLITE_LOCK_WAIT_S
    while True:
        try:
            with _upgrade_lock(engine), engine.begin() as connection:
                config = alembic_config(connection, script_location=script_location)
                _refuse_unknown(connection, script_location=script_location)
                _adopt_legacy(connection, config)
                command.upgrade(config, "head")
            return head(script_location)
        except OperationalError as exc:
            # SQLite's busy timeout (30 s) can run out behind several upgraders on a slow machine: wait on,
            # as Postgres's lock does, up to its LOCK_TIMEOUT.
            if "database is locked" in str(exc) and time.monotonic() < deadline:
                continue
            raise Unavailable(f"database unavailable: {_first_line(exc)}") from exc


def current(connection: Connection) -> str | None:
    """Return the database's revision, or None when it has none."""
    return MigrationContext.configure(connection).get_current_revision()


def new_revision(engine: Engine, message: str, *, script_location: Path = MIGRATIONS) -> Path | None:
    """Write the next revision from what the models have and head lacks (as seen on `engine`); None if nothing."""
    upgrade(engine, script_location=script_location)
    rev_id = f"{int(head(script_location)) + 1:04d}"
    with engine.begin() as connection:
        written = command.revision(alembic_config(connection, script_location=script_location), message,
                                   autogenerate=True, rev_id=rev_id)
    _script.cache_clear()
    if not written:
        return None
    assert not isinstance(written, list)
    return Path(written.path)


def render_item(kind: str, item: Any, _context: Any) -> str | Literal[False]:
    """Render SQLModel's string type as plain `sa.String`, so revisions do not depend on sqlmodel."""
    if kind == "type" and isinstance(item, AutoString):
        return f"sa.String(length={item.length})" if item.length else "sa.String()"
    return False


@contextmanager
def _upgrade_lock(engine: Engine) -> Iterator[None]:
    if engine.dialect.name == "sqlite":
        yield  # the upgrade's transaction begins IMMEDIATE: it is the lock
        return
    with engine.connect() as holder:
        try:
            with holder.begin():  # the timeout ends with this transaction, the session-level lock does not
                holder.execute(text(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'"))
                holder.execute(text("SELECT pg_advisory_lock(:key)"), {"key": UPGRADE_LOCK_KEY})
        except DBAPIError as exc:
            if "lock timeout" in str(exc):
                raise Unavailable(f"another schema upgrade held the lock for over {LOCK_TIMEOUT}") from exc
            raise
        try:
            yield
        finally:
            holder.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": UPGRADE_LOCK_KEY})
            holder.commit()


def _refuse_unknown(connection: Connection, *, script_location: Path) -> None:
    """Refuse a schema newer than this code, or tables that no revision accounts for."""
    known = {revision.revision for revision in _script(script_location).walk_revisions()}
    found = current(connection)
    if found is not None and found not in known:
        raise _newer(found, script_location)
    tables = set(inspect(connection).get_table_names())
    if LEGACY_TABLE in tables:
        version = _legacy_version(connection)
        if version > LEGACY_VERSION:
            raise _newer(f"version {version}", script_location)
    elif found is None and tables & {"agents", "rollouts", "decisions"}:
        raise Unavailable("the database has Gatekeeper tables but no schema revision (were they made by hand?);"
                          " refusing to migrate it")


def _adopt_legacy(connection: Connection, config: Config) -> None:
    """Bring a database made before Alembic to revision 0001 and drop its version table."""
    if LEGACY_TABLE not in inspect(connection).get_table_names():
        return
    if current(connection) is None:
        for version in range(_legacy_version(connection) + 1, LEGACY_VERSION + 1):
            for step in LEGACY_STEPS[version]:
                connection.execute(text(step))
        command.stamp(config, LEGACY_REVISION)
    connection.execute(text(f"DROP TABLE {LEGACY_TABLE}"))


def _legacy_version(connection: Connection) -> int:
    found = connection.execute(text(f"SELECT version FROM {LEGACY_TABLE} WHERE id = 1")).scalar()
    return LEGACY_VERSION if found is None else int(found)


def _newer(found: str, script_location: Path) -> Unavailable:
    return Unavailable(f"database schema {found} is newer than this Gatekeeper (revision {head(script_location)});"
                       " upgrade Gatekeeper")


def _first_line(exc: BaseException) -> str:
    lines = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
