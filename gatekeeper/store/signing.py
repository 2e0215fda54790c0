"""Data access for the signing keys every worker and replica shares. Nothing here commits."""

from __future__ import annotations

from sqlmodel import Session

from gatekeeper.store.models import SigningKey


def get_signing_key(name: str, *, db: Session) -> str | None:
    """Return the stored key called `name`, if one was made."""
    row = db.get(SigningKey, name)
    return row.value if row is not None else None


def add_signing_key(name: str, *, value: str, now: float, db: Session) -> None:
    """Store a new key; a concurrent first start fails here on the primary key (IntegrityError)."""
    db.add(SigningKey(name=name, value=value, created_at=now))
    db.flush()
