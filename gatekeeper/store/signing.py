"""Data access for the signing keys every worker and replica shares. Nothing here commits."""

from __future__ import annotations

from sqlmodel import Session

from gatekeeper.store.models import SigningKey


def get_signing_key(session: Session, name: str) -> str | None:
    """Return the stored key called `name`, if one was made."""
    row = session.get(SigningKey, name)
    return row.value if row is not None else None


def add_signing_key(session: Session, name: str, *, value: str, now: float) -> None:
    """Store a new key; a concurrent first start fails here on the primary key (IntegrityError)."""
    session.add(SigningKey(name=name, value=value, created_at=now))
    session.flush()
