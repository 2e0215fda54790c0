"""Administration commands that talk to the database directly: db upgrade|revision, token create, user create."""

from __future__ import annotations

import getpass
import os
import tempfile
import time
from pathlib import Path

import click

from gatekeeper.config import Settings
from gatekeeper.errors import GatekeeperError
from gatekeeper.store.db import Database
from gatekeeper.store.schema import new_revision
from gatekeeper.store.tokens import ROLES, USER_ROLES, create_token, create_user


def _database(url: str | None) -> Database:
    return Database(url or Settings.from_env().database_url)


_db_option = click.option("--db", "db_url", envvar="GATEKEEPER_DATABASE_URL",
                          help="Database URL (default: GATEKEEPER_DATABASE_URL or sqlite:///gatekeeper.db).")


@click.group()
def db() -> None:
    """Manage the database schema."""


@db.command("upgrade")
@_db_option
def db_upgrade(db_url: str | None) -> None:
    """Create or upgrade the schema; safe to run any number of times, also at once."""
    database = _database(db_url)
    try:
        revision = database.upgrade()
        click.echo(f"schema revision {revision} at {database.shown_url} ({len(database.table_names())} tables)")
    finally:
        database.dispose()


@db.command("revision")
@click.option("-m", "--message", required=True, help="What the models' change is, in a few words.")
def db_revision(message: str) -> None:
    """Write the migration of the models' changes since the newest revision (read it before committing)."""
    with tempfile.TemporaryDirectory(prefix="gatekeeper-revision-") as folder:
        database = Database(f"sqlite:///{Path(folder) / 'head.db'}")
        try:
            path = new_revision(database.engine, message)
        finally:
            database.dispose()
    click.echo(f"wrote {path}" if path else "nothing to write: the models match the newest revision")


@click.group()
def token() -> None:
    """Manage API tokens."""


@token.command("create")
@click.option("--role", type=click.Choice(ROLES), required=True, help="What the token may do.")
@click.option("--name", required=True, help="Who or what holds the token (shown in the audit trail).")
@click.option("--agent", default=None, help="The agent an `agent` token is scoped to.")
@_db_option
def token_create(role: str, name: str, agent: str | None, db_url: str | None) -> None:
    """Create a token and print it once; only its hash is stored."""
    database = _database(db_url)
    database.upgrade()
    try:
        with database.transaction() as session:
            plaintext, _ = create_token(session, name, role=role, agent=agent, now=time.time())
    except GatekeeperError as exc:
        raise click.UsageError(exc.message) from None
    click.echo(plaintext)


@click.group()
def user() -> None:
    """Manage dashboard users."""


@user.command("create")
@click.argument("username")
@click.option("--role", type=click.Choice(USER_ROLES), required=True)
@click.option("--password", envvar="GATEKEEPER_PASSWORD", default=None,
              help="Password (default: GATEKEEPER_PASSWORD, else asked for).")
@_db_option
def user_create(username: str, role: str, password: str | None, db_url: str | None) -> None:
    """Create a dashboard user with a hashed password."""
    if password is None:
        password = os.environ.get("GATEKEEPER_PASSWORD") or getpass.getpass("password: ")
    database = _database(db_url)
    database.upgrade()
    try:
        with database.transaction() as session:
            create_user(session, username, password=password, role=role, now=time.time())
    except GatekeeperError as exc:
        raise click.UsageError(exc.message) from None
    click.echo(f"created {role} {username}")
