"""The notification outbox: transitions waiting to be delivered to the webhooks. Nothing here commits."""

from __future__ import annotations

from sqlmodel import Session, col, select

from gatekeeper.store.models import Notification


def due_notifications(db: Session, *, now: float, max_attempts: int, limit: int) -> list[Notification]:
    """Return undelivered notifications whose next attempt is due, oldest first."""
    query = (select(Notification).where(col(Notification.delivered_at).is_(None),
                                        Notification.next_attempt_at <= now,
                                        Notification.attempts < max_attempts)
             .order_by(col(Notification.id)).limit(limit))
    return list(db.exec(query))


def notification(db: Session, row_id: int) -> Notification | None:
    """Return one notification, or None when it is gone."""
    return db.get(Notification, row_id)
