"""Data access for API tokens and dashboard users. Tokens and passwords are stored hashed.

Revoking a token also appends a row to `token_revocations`; the newest row's id is the
*revocation mark*. Every worker reads the mark on each authenticated request (one indexed
`max(id)` on a connection kept per thread) and drops its token cache when the mark moved, so
a revoked token is refused on the very next request in every worker and replica.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import secrets
import threading
from typing import Any

from sqlalchemy import text
from sqlmodel import Session, col, select
from werkzeug.security import check_password_hash, generate_password_hash

from gatekeeper.errors import BadRequest, Conflict, NotFound, Unavailable
from gatekeeper.store.db import Database
from gatekeeper.store.models import ApiToken, TokenRevocation, User

ROLES = ("agent", "viewer", "release_manager", "alertmanager")
USER_ROLES = ("viewer", "release_manager")
TOKEN_PREFIX = "gk_"
REVOCATION_LOCK = 0x676B5F7265766F6B  # "gk_revok": the Postgres advisory lock that orders revocations


def hash_token(token: str) -> str:
    """Return the stored form of a token: its SHA-256 (tokens are random, so no salt is needed)."""
    return hashlib.sha256(token.encode()).hexdigest()


def create_token(name: str, *, role: str, agent: str | None, now: float, db: Session
                 ) -> tuple[str, ApiToken]:
    """Add a token and return its plaintext (shown once) with the row."""
    if role not in ROLES:
        raise BadRequest(f"role must be one of {', '.join(ROLES)}", field="role")
    if (role == "agent") != (agent is not None):
        raise BadRequest("an agent token needs --agent, and only an agent token takes one", field="agent")
    plaintext = TOKEN_PREFIX + secrets.token_urlsafe(32)
    row = ApiToken(name=name, token_hash=hash_token(plaintext), role=role, agent=agent, created_at=now)
    db.add(row)
    db.flush()
    return plaintext, row


def find_token(plaintext: str, *, db: Session) -> ApiToken | None:
    """Return the live token row for a plaintext token, if any."""
    row = db.exec(select(ApiToken).where(ApiToken.token_hash == hash_token(plaintext))).first()
    return row if row is not None and row.revoked_at is None else None


def list_tokens(*, include_revoked: bool = True, db: Session) -> list[ApiToken]:
    """Return every token row, oldest first (callers must never show the hash)."""
    query = select(ApiToken).order_by(col(ApiToken.id))
    if not include_revoked:
        query = query.where(col(ApiToken.revoked_at).is_(None))
    return list(db.exec(query))


def revoke_token(token_id: int, *, actor: str, now: float, db: Session) -> ApiToken:
    """Revoke a token and move the revocation mark; revoking twice is refused with 409."""
    row = db.get(ApiToken, token_id, with_for_update=True)
    if row is None:
        raise NotFound(f"no token with id {token_id}", field="token_id")
    if row.revoked_at is not None:
        raise Conflict(f"token {token_id} ({row.name}) is already revoked", field="token_id")
    if db.get_bind().dialect.name == "postgresql":
        # Revocations commit one at a time, so their ids rise in commit order and no reader sees a
        # newer mark before an older revocation is visible (SQLite's BEGIN IMMEDIATE does the same).
        db.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": REVOCATION_LOCK})
    row.revoked_at = now
    db.add(row)
    db.add(TokenRevocation(token_id=token_id, at=now, actor=actor))
    db.flush()
    return row


class RevocationMark:
    """Read the revocation mark cheaply: one raw `max(id)` per call on a connection kept per thread."""

    SQL = "SELECT max(id) FROM token_revocations"

    def __init__(self, db: Database) -> None:
        self.db = db
        self._local = threading.local()

    def read(self) -> int:
        """Return the id of the newest revocation (0 when none), reading outside any transaction."""
        for attempt in (1, 2):  # a connection dropped by a restart or failover is reopened once, unseen
            try:
                found = self._read_once()
                return int(found[0] or 0)
            except Exception as exc:  # noqa: BLE001 - any driver's error; the connection is dropped
                self._drop()
                if attempt == 2:
                    raise Unavailable(f"database unavailable: {exc}") from exc
        raise AssertionError("unreachable")

    def _read_once(self) -> Any:
        opened = getattr(self._local, "opened", None)
        if opened is None:
            opened = self._local.opened = self._open()
        cursor = opened[1]
        cursor.execute(self.SQL)
        return cursor.fetchone()

    def _drop(self) -> None:
        opened, self._local.opened = getattr(self._local, "opened", None), None
        if opened is not None:
            with contextlib.suppress(Exception):  # it is broken already
                opened[0].close()

    def _open(self) -> tuple[Any, Any]:
        pooled = self.db.engine.raw_connection()
        connection: Any = pooled.driver_connection
        pooled.detach()  # kept for the thread's life: a pool checkout per request would cost more than the read
        if self.db.is_sqlite:
            connection.isolation_level = None  # autocommit: each read sees the newest commit
        else:
            connection.autocommit = True
        return connection, connection.cursor()


def create_user(username: str, *, password: str, role: str, now: float, db: Session) -> User:
    """Add a dashboard user with a salted password hash."""
    if role not in USER_ROLES:
        raise BadRequest(f"role must be one of {', '.join(USER_ROLES)}", field="role")
    if len(password) < 8:
        raise BadRequest("the password must have at least 8 characters", field="password")
    if db.exec(select(User).where(User.username == username)).first() is not None:
        raise Conflict(f"user {username!r} exists", field="username")
    user = User(username=username, password_hash=generate_password_hash(password), role=role, created_at=now)
    db.add(user)
    db.flush()
    return user


def get_user(user_id: int, *, db: Session) -> User | None:
    """Return a dashboard user by id, or None when it is gone."""
    return db.get(User, user_id)


def check_user(username: str, password: str, *, db: Session) -> User | None:
    """Return the user when the password matches, else None."""
    user = db.exec(select(User).where(User.username == username)).first()
    # Hash even for an unknown name, so the answer's timing does not tell which names exist.
    matches = check_password_hash(user.password_hash if user else _dummy_hash(), password)
    return user if user is not None and matches else None


@functools.cache
def _dummy_hash() -> str:
    return generate_password_hash("no user has this password")
