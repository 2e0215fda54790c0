"""Data access for API tokens and dashboard users. Tokens and passwords are stored hashed."""

from __future__ import annotations

import functools
import hashlib
import secrets

from sqlmodel import Session, select
from werkzeug.security import check_password_hash, generate_password_hash

from gatekeeper.errors import BadRequest, Conflict
from gatekeeper.store.models import ApiToken, User

ROLES = ("agent", "viewer", "release_manager", "alertmanager")
USER_ROLES = ("viewer", "release_manager")
TOKEN_PREFIX = "gk_"


def hash_token(token: str) -> str:
    """Return the stored form of a token: its SHA-256 (tokens are random, so no salt is needed)."""
    return hashlib.sha256(token.encode()).hexdigest()


def create_token(session: Session, name: str, *, role: str, agent: str | None, now: float
                 ) -> tuple[str, ApiToken]:
    """Add a token and return its plaintext (shown once) with the row."""
    if role not in ROLES:
        raise BadRequest(f"role must be one of {', '.join(ROLES)}", field="role")
    if (role == "agent") != (agent is not None):
        raise BadRequest("an agent token needs --agent, and only an agent token takes one", field="agent")
    plaintext = TOKEN_PREFIX + secrets.token_urlsafe(32)
    row = ApiToken(name=name, token_hash=hash_token(plaintext), role=role, agent=agent, created_at=now)
    session.add(row)
    session.flush()
    return plaintext, row


def find_token(session: Session, plaintext: str) -> ApiToken | None:
    """Return the live token row for a plaintext token, if any."""
    row = session.exec(select(ApiToken).where(ApiToken.token_hash == hash_token(plaintext))).first()
    return row if row is not None and row.revoked_at is None else None


def create_user(session: Session, username: str, *, password: str, role: str, now: float) -> User:
    """Add a dashboard user with a salted password hash."""
    if role not in USER_ROLES:
        raise BadRequest(f"role must be one of {', '.join(USER_ROLES)}", field="role")
    if len(password) < 8:
        raise BadRequest("the password must have at least 8 characters", field="password")
    if session.exec(select(User).where(User.username == username)).first() is not None:
        raise Conflict(f"user {username!r} exists", field="username")
    user = User(username=username, password_hash=generate_password_hash(password), role=role, created_at=now)
    session.add(user)
    session.flush()
    return user


def check_user(session: Session, username: str, password: str) -> User | None:
    """Return the user when the password matches, else None."""
    user = session.exec(select(User).where(User.username == username)).first()
    # Hash even for an unknown name, so the answer's timing does not tell which names exist.
    matches = check_password_hash(user.password_hash if user else _dummy_hash(), password)
    return user if user is not None and matches else None


@functools.cache
def _dummy_hash() -> str:
    return generate_password_hash("no user has this password")
