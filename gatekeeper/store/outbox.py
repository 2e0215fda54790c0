"""The notification outbox: transitions waiting to be delivered to the webhooks. Nothing here commits."""

from __future__ import annotations

from sqlmodel import Session, col, select

from gatekeeper.store.models import Notification


def due_notifications(*, now: float, max_attempts: int, limit: int, db: Session) -> list[Notification]:
    """Return undelivered notifications whose next attempt is due, oldest first."""
    query = (select(Notification).where(col(Notification.delivered_at).is_(None),
                                        Notification.next_attempt_at <= now,
                                        Notification.attempts < max_attempts)
             .order_by(col(Notification.id)).limit(limit))
    return list(db.exec(query))


def notification(row_id: int, *, db: Session) -> Notification | None:
    """Return one notification, or None when it is gone."""
    return db.get(Notification, row_id)
