"""`db upgrade` on both backends: idempotent, upgrades an older schema in place, refuses a newer one."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from gatekeeper.errors import Unavailable
from gatekeeper.store import models
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


def test_upgrade_is_idempotent(database: Database) -> None:
    assert database.upgrade() == database.upgrade() == models.SCHEMA_VERSION
    assert {"agents", "rollouts", "transitions", "gate_evaluations", "tokens", "users", "sessions",
            "decisions", "approvals"} <= set(database.table_names())
    assert "outcome_at IS NOT NULL" in _index_definition(database)
    if database.is_sqlite:
        with database.engine.connect() as connection:
            assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert connection.exec_driver_sql("PRAGMA page_size").scalar() == 1024  # a new file


def test_a_version_1_database_is_upgraded_in_place(database: Database) -> None:
    database.upgrade()
    with database.engine.begin() as connection:  # turn it back into what version 1 created
        connection.execute(text(f"DROP INDEX {OUTCOME_INDEX}"))
        connection.execute(text(f"CREATE INDEX {OUTCOME_INDEX} ON decisions (rollout_id, arm, outcome_at)"))
        connection.execute(text("UPDATE schema_version SET version = 1"))
        connection.execute(text("INSERT INTO agents (name, policy, stable_version, created_at)"
                                " VALUES ('kept', 'support-default', 'v1', 0)"))
    assert "IS NOT NULL" not in _index_definition(database)

    assert database.upgrade() == models.SCHEMA_VERSION == 2
    assert "outcome_at IS NOT NULL" in _index_definition(database)
    with database.engine.connect() as connection:
        assert connection.execute(text("SELECT version FROM schema_version")).scalar_one() == 2
        assert connection.execute(text("SELECT name FROM agents")).scalars().all() == ["kept"]


def test_a_newer_schema_is_refused_and_left_alone(database: Database) -> None:
    database.upgrade()
    with database.engine.begin() as connection:
        connection.execute(text("UPDATE schema_version SET version = 99"))
    with pytest.raises(Unavailable, match="newer"):
        database.upgrade()
    with database.engine.connect() as connection:
        assert connection.execute(text("SELECT version FROM schema_version")).scalar_one() == 99
