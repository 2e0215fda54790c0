"""GATEKEEPER_DATABASE_URL: every Postgres spelling runs on psycopg 3; every bad URL is one line, exit 1."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
from sqlalchemy import text

from gatekeeper.config import Settings, database_url
from gatekeeper.errors import ConfigError
from gatekeeper.store.db import Database
from tests.support.services import PostgresServer

CLI = "from gatekeeper.cli import main; main()"


@pytest.mark.parametrize(("given", "used"), [
    ("sqlite:///gatekeeper.db", "sqlite:///gatekeeper.db"),
    ("sqlite:////var/lib/gk/a b.db", "sqlite:////var/lib/gk/a b.db"),
    ("sqlite+pysqlite:///gk.db", "sqlite:///gk.db"),
    ("postgresql://gk@db.internal/gatekeeper", "postgresql+psycopg://gk@db.internal/gatekeeper"),
    ("postgres://gk:p%40ss@db:5432/gatekeeper?sslmode=require",
     "postgresql+psycopg://gk:p%40ss@db:5432/gatekeeper?sslmode=require"),
    ("postgresql+psycopg2://gk@db/gatekeeper", "postgresql+psycopg://gk@db/gatekeeper"),
    ("postgresql+psycopg://gk@db/gatekeeper", "postgresql+psycopg://gk@db/gatekeeper"),
])
def test_accepted_urls_and_the_driver_they_run_on(given: str, used: str) -> None:
    assert database_url(given) == used


@pytest.mark.parametrize(("given", "says"), [
    ("mysql://gk@db/gatekeeper", "scheme 'mysql' is not supported"),
    ("postgresql+asyncpg://gk@db/gatekeeper", "scheme 'postgresql+asyncpg' is not supported"),
    ("http://db/gatekeeper", "scheme 'http' is not supported"),
    ("gatekeeper.db", "is not a database URL"),
    ("postgresql://gk@db:port/gatekeeper", "is not a database URL"),
    ("postgresql://gk@db", "names no database"),
    ("postgres://gk@db/", "names no database"),
    ("sqlite://", "names no database"),
])
def test_bad_urls_are_refused_naming_the_variable(given: str, says: str) -> None:
    with pytest.raises(ConfigError, match=f"^GATEKEEPER_DATABASE_URL {re.escape(says)}") as caught:
        Settings.from_env({"GATEKEEPER_DATABASE_URL": given})
    assert "\n" not in caught.value.message and "sqlite:///PATH or postgresql://USER@HOST/DB" in caught.value.message
    with pytest.raises(ConfigError, match=re.escape(says)):
        Database(given)


@pytest.mark.parametrize(("command", "given"), [
    (["db", "upgrade"], "mysql://gk@db/gatekeeper"),
    (["serve"], "not a url"),
    (["scheduler", "--once"], "postgresql://gk@db"),
    (["token", "create", "--role", "viewer", "--name", "v"], "postgres://gk@db/"),
])
def test_the_cli_says_what_is_wrong_in_one_line(command: list[str], given: str) -> None:
    env = {**os.environ, "GATEKEEPER_DATABASE_URL": given}
    done = subprocess.run([sys.executable, "-c", CLI, *command], env=env, capture_output=True, timeout=60,
                          check=False)
    assert done.returncode == 1
    assert done.stdout == b""
    lines = done.stderr.decode().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gatekeeper: GATEKEEPER_DATABASE_URL "), done.stderr.decode()


@pytest.mark.parametrize("scheme", ["postgresql", "postgres", "postgresql+psycopg2"])
def test_every_postgres_spelling_connects_with_psycopg_3(postgres: PostgresServer, scheme: str) -> None:
    url = postgres.create_database("gk_url").replace("postgresql+psycopg", scheme, 1)
    database = Database(url)
    try:
        assert database.engine.dialect.driver == "psycopg"
        with database.engine.connect() as connection:
            assert connection.execute(text("SELECT current_database()")).scalar_one().startswith("gk_url_")
    finally:
        database.dispose()
