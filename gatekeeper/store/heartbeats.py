"""Data access for the scheduler's lease and heartbeat rows, as servers read them. Nothing here commits."""

from __future__ import annotations

from sqlmodel import Session

from gatekeeper.store.models import Lease, SchedulerHeartbeat


def record_tick(name: str, *, holder: str, now: float, interval_s: float, db: Session) -> None:
    """Note that `holder` leads and ticked at `now` (kept since when it leads)."""
    row = db.get(SchedulerHeartbeat, name, with_for_update=True)
    if row is None:
        db.add(SchedulerHeartbeat(name=name, holder=holder, ticked_at=now, interval_s=interval_s,
                                       leading_since=now))
        return
    if row.holder != holder:
        row.holder, row.leading_since = holder, now
    row.ticked_at, row.interval_s = now, interval_s
    db.add(row)


def last_tick(name: str, *, db: Session) -> SchedulerHeartbeat | None:
    """Return the heartbeat of the scheduler that led last, if any ever did."""
    return db.get(SchedulerHeartbeat, name)


def lease_of(name: str, *, db: Session) -> Lease | None:
    """Return the lease row, if any scheduler ever took it."""
    return db.get(Lease, name)
