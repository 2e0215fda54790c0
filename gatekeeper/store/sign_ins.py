"""Data access for the sign-in throttle's failed attempts. Nothing here commits."""

from __future__ import annotations

from sqlmodel import Session, col, delete, func, select

from gatekeeper.store.models import SignInFailure


def recent_failures(*, username: str, address: str, since: float, db: Session) -> tuple[int, int]:
    """Return how many sign-ins failed since `since` for this username, and from this address."""
    by_user = db.exec(select(func.count()).select_from(SignInFailure)
                           .where(SignInFailure.username == username, col(SignInFailure.at) > since)).one()
    by_address = db.exec(select(func.count()).select_from(SignInFailure)
                              .where(SignInFailure.address == address, col(SignInFailure.at) > since)).one()
    return int(by_user), int(by_address)


def record_failure(*, username: str, address: str, now: float, forget_before: float, db: Session) -> None:
    """Record one failed sign-in, and forget every failure older than the throttle's window."""
    db.exec(delete(SignInFailure).where(col(SignInFailure.at) <= forget_before))
    db.add(SignInFailure(username=username[:100], address=address[:100], at=now))


def clear_failures(*, username: str, db: Session) -> None:
    """Forget a user's failed sign-ins once they signed in (their address's stay counted)."""
    db.exec(delete(SignInFailure).where(col(SignInFailure.username) == username))
