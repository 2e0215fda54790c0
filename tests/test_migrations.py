"""A database made by commit ed52833 (schema 2, before Alembic) upgrades to head with every row intact.

The old database is made by the old code itself (tests/support/legacy.py), on SQLite and on Postgres.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import select, text
from sqlmodel import SQLModel

from gatekeeper import create_app
from gatekeeper.store import schema
from gatekeeper.store.db import Database
from tests.support.app import POLICIES
from tests.support.legacy import AUTO_ID_TABLES, LEGACY_TOKEN, ROWS, build_legacy_database
from tests.support.services import PostgresServer

OUTCOME_INDEX = "ix_decisions_rollout_arm_outcome"


@pytest.fixture(params=["sqlite", "postgres"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'legacy.db'}"
    server: PostgresServer = request.getfixturevalue("postgres")
    return server.create_database("gk_legacy")


@pytest.fixture
def database(url: str) -> Iterator[Database]:
    built = Database(url)
    yield built
    built.dispose()


def expected_rows(table: str) -> list[dict[str, Any]]:
    """Return ROWS of a table with the ids the database gave them."""
    if table not in AUTO_ID_TABLES:
        return ROWS[table]
    return [{"id": n, **row} for n, row in enumerate(ROWS[table], start=1)]


def stored_rows(database: Database) -> dict[str, list[dict[str, Any]]]:
    """Return every row of every table of today's models, in primary-key order."""
    with database.engine.connect() as connection:
        return {table.name: [dict(row) for row in connection.execute(
                    select(table).order_by(*table.primary_key.columns)).mappings()]
                for table in SQLModel.metadata.sorted_tables}


def index_definition(database: Database) -> str:
    sql = ("SELECT sql FROM sqlite_master WHERE name = :name" if database.is_sqlite
           else "SELECT indexdef FROM pg_indexes WHERE indexname = :name")
    with database.engine.connect() as connection:
        return str(connection.execute(text(sql), {"name": OUTCOME_INDEX}).scalar_one())


def differences(database: Database) -> list[Any]:
    with database.engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return list(compare_metadata(context, SQLModel.metadata))


def test_an_ed52833_database_upgrades_to_head_with_every_row_intact(url: str, database: Database,
                                                                    tmp_path: Path) -> None:
    build_legacy_database(url, tmp_path)
    assert "schema_version" in database.table_names()

    assert database.upgrade() == schema.head()

    assert "schema_version" not in database.table_names()
    assert differences(database) == []
    assert "outcome_at IS NOT NULL" in index_definition(database)
    stored = stored_rows(database)
    for table in ROWS:
        expected = expected_rows(table)
        assert [{column: row[column] for column in want} for row, want in zip(stored[table], expected,
                                                                              strict=True)] == expected, table
        added = {column for row in stored[table] for column in row} - {column for row in expected for column in row}
        assert all(row[column] is None for row in stored[table] for column in added), table  # the new columns
    assert database.upgrade() == schema.head()  # and again: nothing left to do
    assert stored_rows(database) == stored


def test_the_upgraded_database_serves_its_old_data_and_takes_new_rows(url: str, database: Database,
                                                                      tmp_path: Path) -> None:
    build_legacy_database(url, tmp_path)
    database.upgrade()
    app = create_app({"database_url": url, "policy_dir": POLICIES})
    client = app.test_client()
    headers = {"Authorization": f"Bearer {LEGACY_TOKEN}"}  # the token the old code stored
    try:
        listed = client.get("/v1/agents", headers=headers)
        assert listed.status_code == 200, listed.get_json()
        assert sorted(agent["name"] for agent in listed.get_json()) == ["billing-agent", "support-bot"]
        created = client.post("/v1/agents", json={"name": "code-assistant", "policy": "coding-agent"},
                              headers=headers)
        assert created.status_code == 201, created.get_json()
    finally:
        app.extensions["gatekeeper"].db.dispose()
    with database.engine.connect() as connection:  # the ids the old code left continue where they were
        assert connection.execute(text("SELECT id FROM agents WHERE name = 'code-assistant'")).scalar_one() == 3


def test_a_version_1_database_gets_the_partial_outcome_index(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'legacy-v1.db'}"
    build_legacy_database(url, tmp_path, version=1)
    database = Database(url)
    try:
        assert "IS NOT NULL" not in index_definition(database)
        assert database.upgrade() == schema.head()
        assert "outcome_at IS NOT NULL" in index_definition(database)
        assert len(stored_rows(database)["decisions"]) == len(ROWS["decisions"])
    finally:
        database.dispose()
