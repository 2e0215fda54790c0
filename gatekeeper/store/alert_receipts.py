"""Receipts of Alertmanager alerts, keyed by (fingerprint, startsAt). Nothing here commits."""

from __future__ import annotations

from sqlmodel import Session, select

from gatekeeper.store.models import AlertReceipt


def find_receipt(*, fingerprint: str, starts_at: str, db: Session) -> AlertReceipt | None:
    """Return the receipt of one firing of an alert, or None when it was never handled."""
    return db.exec(select(AlertReceipt).where(AlertReceipt.fingerprint == fingerprint,
                                                   AlertReceipt.starts_at == starts_at)).first()
