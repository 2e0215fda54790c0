"""`db upgrade` on both backends: migrations that match the models, idempotent, a newer schema refused."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Column, Integer, Table, inspect, text
from sqlmodel import SQLModel
from sqlmodel.sql.sqltypes import AutoString

from gatekeeper.errors import Unavailable
from gatekeeper.store import schema
from gatekeeper.store.db import Database
from tests.support.services import PostgresServer

OUTCOME_INDEX = "ix_decisions_rollout_arm_outcome"


@pytest.fixture(params=["sqlite", "postgres"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'g.db'}"
    else:
        server: PostgresServer = request.getfixturevalue("postgres")
        url = server.create_database("gk_schema")
    built = Database(url)
    yield built
    built.dispose()


def _index_definition(database: Database) -> str:
    sql = ("SELECT sql FROM sqlite_master WHERE name = :name" if database.is_sqlite
           else "SELECT indexdef FROM pg_indexes WHERE indexname = :name")
    with database.engine.connect() as connection:
        return str(connection.execute(text(sql), {"name": OUTCOME_INDEX}).scalar_one())


def _revision(database: Database) -> str:
    with database.engine.connect() as connection:
        return str(connection.execute(text("SELECT version_num FROM alembic_version")).scalar_one())


def _newest_revision_file() -> str:
    return max(path.name[:4] for path in (schema.MIGRATIONS / "versions").glob("[0-9][0-9][0-9][0-9]_*.py"))


def test_the_migrations_make_exactly_the_models_schema(database: Database) -> None:
    assert database.upgrade() == schema.head() == _newest_revision_file()
    with database.engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        assert compare_metadata(context, SQLModel.metadata) == []
    # compare_metadata does not look at an index's WHERE clause: check the partial index itself.
    assert "outcome_at IS NOT NULL" in _index_definition(database)


def test_upgrade_is_idempotent(database: Database) -> None:
    assert not database.is_ready()  # an empty database has no schema yet
    assert database.upgrade() == database.upgrade() == schema.head()
    assert _revision(database) == schema.head()
    assert database.is_ready()
    assert {"agents", "rollouts", "transitions", "gate_evaluations", "tokens", "users", "sessions",
            "decisions", "approvals", "alembic_version"} <= set(database.table_names())
    assert "schema_version" not in database.table_names()
    if database.is_sqlite:
        with database.engine.connect() as connection:
            assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert connection.exec_driver_sql("PRAGMA page_size").scalar() == 1024  # a new file


def test_a_newer_schema_is_refused_and_left_alone(database: Database) -> None:
    database.upgrade()
    with database.engine.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    newer = rf"^database schema 9999 is newer than this Gatekeeper \(revision {schema.head()}\)"
    with pytest.raises(Unavailable, match=newer):
        database.upgrade()
    assert _revision(database) == "9999"
    assert not database.is_ready()


def test_a_newer_hand_made_schema_is_refused_and_left_alone(database: Database) -> None:
    with database.engine.begin() as connection:  # what a hand-made upgrade past version 2 would have left
        connection.execute(text("CREATE TABLE schema_version (id INTEGER PRIMARY KEY, version INTEGER NOT NULL)"))
        connection.execute(text("INSERT INTO schema_version (id, version) VALUES (1, 3)"))
    with pytest.raises(Unavailable, match="version 3 is newer"):
        database.upgrade()
    assert database.table_names() == ["schema_version"]


def test_tables_without_a_revision_are_refused_and_left_alone(database: Database) -> None:
    with database.engine.begin() as connection:  # tables someone made without the migrations
        connection.execute(text("CREATE TABLE agents (id INTEGER PRIMARY KEY, name VARCHAR(63))"))
    with pytest.raises(Unavailable, match="tables but no schema revision"):
        database.upgrade()
    assert database.table_names() == ["agents"]


def test_an_unreachable_database_is_unavailable_in_one_line(postgres: PostgresServer) -> None:
    database = Database(postgres.url.rsplit("/", 1)[0] + "/no_such_database")
    try:
        with pytest.raises(Unavailable, match=r"^database unavailable: .*no_such_database[^\n]*$"):
            database.upgrade()
    finally:
        database.dispose()


@pytest.fixture
def scratch_table() -> Iterator[Table]:
    """A table the models gain for one test, as a change an engineer makes would."""
    table = Table("scratch_notes", SQLModel.metadata, Column("id", Integer, primary_key=True),
                  Column("note", AutoString(length=80), nullable=False))
    yield table
    SQLModel.metadata.remove(table)


def test_a_new_revision_holds_the_models_change_and_applies(tmp_path: Path, scratch_table: Table) -> None:
    migrations = shutil.copytree(schema.MIGRATIONS, tmp_path / "migrations",
                                 ignore=shutil.ignore_patterns("__pycache__"))
    first, second = Database(f"sqlite:///{tmp_path / 'head.db'}"), Database(f"sqlite:///{tmp_path / 'new.db'}")
    try:
        head = schema.head()
        following = f"{int(head) + 1:04d}"
        written = schema.new_revision(first.engine, "add scratch notes", script_location=migrations)
        assert written is not None and written.name == f"{following}_add_scratch_notes.py"
        source = written.read_text()
        assert f'down_revision = "{head}"' in source or f"down_revision = '{head}'" in source
        assert "op.create_table('scratch_notes'" in source and "sa.String(length=80)" in source
        assert "sqlmodel" not in source  # revisions do not depend on sqlmodel's types
        assert schema.upgrade(second.engine, script_location=migrations) == following
        columns: list[dict[str, Any]] = inspect(second.engine).get_columns("scratch_notes")
        assert [column["name"] for column in columns] == ["id", "note"]
    finally:
        first.dispose()
        second.dispose()


def test_no_revision_is_written_while_the_models_match_head(tmp_path: Path) -> None:
    migrations = shutil.copytree(schema.MIGRATIONS, tmp_path / "migrations",
                                 ignore=shutil.ignore_patterns("__pycache__"))
    database = Database(f"sqlite:///{tmp_path / 'head.db'}")
    try:
        assert schema.new_revision(database.engine, "nothing", script_location=migrations) is None
    finally:
        database.dispose()
    assert sorted(path.name for path in (migrations / "versions").glob("*.py")) == sorted(
        path.name for path in (schema.MIGRATIONS / "versions").glob("*.py"))


def test_the_revisions_downgrade_to_nothing_and_upgrade_again(database: Database) -> None:
    database.upgrade()
    with database.engine.begin() as connection:
        command.downgrade(schema.alembic_config(connection), "0001")
        assert "overrun_micros" not in {column["name"] for column in inspect(connection).get_columns("decisions")}
        command.downgrade(schema.alembic_config(connection), "base")
    assert database.table_names() == ["alembic_version"]
    assert database.upgrade() == schema.head()
    with database.engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        assert compare_metadata(context, SQLModel.metadata) == []
