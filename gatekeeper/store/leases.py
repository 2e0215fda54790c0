"""The scheduler's leadership: the `leases` row and, on Postgres, a session-level advisory lock.

Nothing here commits: the lease functions run inside the caller's transaction. The advisory
lock lives on its own connection, outside any transaction, for as long as that connection does.
"""

from __future__ import annotations

import contextlib
import logging

from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session, select

from gatekeeper.store.db import Database
from gatekeeper.store.models import Lease

log = logging.getLogger(__name__)


def take_lease(name: str, *, holder: str, expires_at: float, now: float, db: Session) -> bool:
    """Take or renew the lease `name` for `holder` when it is free, expired or already theirs."""
    row = db.exec(select(Lease).where(Lease.name == name).with_for_update()).first()
    if row is None:
        db.add(Lease(name=name, holder=holder, expires_at=expires_at))
        db.flush()
        return True
    if row.holder != holder and row.expires_at > now:
        return False
    row.holder, row.expires_at = holder, expires_at
    db.add(row)
    return True


def give_up_lease(name: str, *, holder: str, db: Session) -> None:
    """Expire the lease at once if `holder` has it, so that a standby takes over on its next tick."""
    row = db.exec(select(Lease).where(Lease.name == name).with_for_update()).first()
    if row is not None and row.holder == holder:
        row.expires_at = 0.0
        db.add(row)


class AdvisoryLock:
    """A Postgres session-level advisory lock on a connection of its own."""

    def __init__(self, db: Database, key: int) -> None:
        self.db = db
        self.key = key
        self._connection: Connection | None = None

    def try_acquire(self) -> bool:
        """Take the lock (or keep it) without waiting; return whether this process holds it."""
        try:
            if self._connection is None:
                self._connection = self.db.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
            held = self._connection.execute(text("SELECT pg_try_advisory_lock(:key)"), {"key": self.key}).scalar()
        except SQLAlchemyError as exc:
            log.warning("advisory lock unavailable: %s", exc)
            self.release()
            return False
        return bool(held)

    def release(self) -> None:
        """Free the lock and drop its connection, as when the process holding it dies."""
        if self._connection is not None:
            with contextlib.suppress(SQLAlchemyError):
                # Unlock now (a closing session frees its locks only once its backend exits), then
                # invalidate rather than return the connection to the pool with the session in it.
                self._connection.execute(text("SELECT pg_advisory_unlock_all()"))
            with contextlib.suppress(SQLAlchemyError):
                self._connection.invalidate()
                self._connection.close()
            self._connection = None
