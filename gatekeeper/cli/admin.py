"""Administration commands: db upgrade|revision and user create talk to the database directly; token
create|list|revoke use the API when a token is configured (--token or GATEKEEPER_TOKEN) and the
database otherwise (or when --db is given), which is how the first token is made."""

from __future__ import annotations

import getpass
import json
import os
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource

from gatekeeper.cli.ops import Remote, table
from gatekeeper.config import Settings
from gatekeeper.errors import GatekeeperError
from gatekeeper.store.db import Database
from gatekeeper.store.models import ApiToken
from gatekeeper.store.schema import new_revision
from gatekeeper.store.tokens import ROLES, USER_ROLES, create_token, create_user, list_tokens, revoke_token


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
    """Manage API tokens (through the API when a token is configured, else in the database)."""


def _token_options(command: Any) -> Any:
    command = _db_option(command)
    command = click.option("--token", envvar="GATEKEEPER_TOKEN",
                           help="A release manager's token: manage tokens through the API (GATEKEEPER_TOKEN).")(command)
    return click.option("--url", envvar="GATEKEEPER_URL", default="http://127.0.0.1:8000", show_default=True,
                        help="Server URL (GATEKEEPER_URL), used with --token.")(command)


def _remote(url: str, api_token: str | None) -> Remote | None:
    """Return an API client when a token is configured and --db was not given on the command line."""
    given_db = click.get_current_context().get_parameter_source("db_url") is ParameterSource.COMMANDLINE
    return Remote(url, api_token) if api_token and not given_db else None


@token.command("create")
@click.option("--role", type=click.Choice(ROLES), required=True, help="What the token may do.")
@click.option("--name", required=True, help="Who or what holds the token (shown in the audit trail).")
@click.option("--agent", default=None, help="The agent an `agent` token is scoped to.")
@click.option("--json", "as_json", is_flag=True, help="Print the token with its id, role and agent as JSON.")
@_token_options
def token_create(role: str, name: str, agent: str | None, as_json: bool, url: str, token: str | None,
                 db_url: str | None) -> None:
    """Create a token and print it once; only its hash is stored."""
    remote = _remote(url, token)
    if remote is not None:
        created = remote.call("POST", "/v1/tokens", {"name": name, "role": role,
                                                     **({"agent": agent} if agent else {})})
    else:
        database = _database(db_url)
        database.upgrade()
        try:
            with database.transaction() as db:
                plaintext, row = create_token(name, role=role, agent=agent, now=time.time(), db=db)
        except GatekeeperError as exc:
            raise click.UsageError(exc.message) from None
        finally:
            database.dispose()
        created = {**_token_dict(row), "token": plaintext}
    click.echo(json.dumps(created, indent=2) if as_json else created["token"])


TOKEN_HEADERS = ("ID", "NAME", "ROLE", "AGENT", "CREATED", "REVOKED")


@token.command("list")
@click.option("--state", type=click.Choice(["all", "active", "revoked"]), default="all", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@_token_options
def token_list(state: str, as_json: bool, url: str, token: str | None, db_url: str | None) -> None:
    """List tokens (never their secrets)."""
    remote = _remote(url, token)
    if remote is not None:
        found = remote.call("GET", f"/v1/tokens?state={state}")
    else:
        database = _database(db_url)
        try:
            with database.reading() as db:
                found = [_token_dict(row) for row in list_tokens(db=db)]
        finally:
            database.dispose()
        found = [t for t in found if state == "all" or (t["revoked_at"] is None) == (state == "active")]
    if as_json:
        click.echo(json.dumps(found, indent=2))
        return
    rows = [[t["id"], t["name"], t["role"], t["agent"] or "-", t["created_at"][:19].replace("T", " "),
             (t["revoked_at"] or "-")[:19].replace("T", " ")] for t in found]
    click.echo(table(rows, TOKEN_HEADERS))


@token.command("revoke")
@click.argument("token_id", type=click.IntRange(1, 2**63 - 1), metavar="ID")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@_token_options
def token_revoke(token_id: int, as_json: bool, url: str, token: str | None, db_url: str | None) -> None:
    """Revoke a token by its id (see `token list`); every server refuses it from the next request on."""
    remote = _remote(url, token)
    if remote is not None:
        revoked = remote.call("POST", f"/v1/tokens/{token_id}/revoke")
    else:
        database = _database(db_url)
        try:
            with database.transaction() as db:
                revoked = _token_dict(revoke_token(token_id, actor=f"cli:{getpass.getuser()}", now=time.time(),
                                                   db=db))
        except GatekeeperError as exc:
            raise click.ClickException(exc.message) from None
        finally:
            database.dispose()
    click.echo(json.dumps(revoked, indent=2) if as_json else
               f"revoked token {revoked['id']} ({revoked['name']}, {revoked['role']})")


def _token_dict(row: ApiToken) -> dict[str, Any]:
    """Return a token row as the API shows it: no secret, no hash."""
    def at(value: float | None) -> str | None:
        return None if value is None else datetime.fromtimestamp(value, tz=UTC).isoformat()

    return {"id": row.id, "name": row.name, "role": row.role, "agent": row.agent, "created_at": at(row.created_at),
            "revoked_at": at(row.revoked_at)}


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
        with database.transaction() as db:
            create_user(username, password=password, role=role, now=time.time(), db=db)
    except GatekeeperError as exc:
        raise click.UsageError(exc.message) from None
    click.echo(f"created {role} {username}")
