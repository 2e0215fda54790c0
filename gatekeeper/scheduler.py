"""The scheduler: evaluates gates and delivers notifications, with exactly one process acting.

Several `gatekeeper scheduler` processes may run, for availability; one leads. Leadership is
a row of the `leases` table with an expiry, taken when it is free or expired and renewed on
every tick. On Postgres the leader must also hold a session-level `pg_try_advisory_lock`, which
Postgres frees by itself when the leader's connection dies, so a wedged leader whose lease
row has not yet expired still cannot be joined by a second one. A standby ticks too and takes
over once the lease expires; a leader that stops cleanly gives the lease up at once.

Each tick (an APScheduler interval job that never overlaps itself) the leader renews the lease
and writes its heartbeat in one transaction (servers read it: `GET /v1/scheduler`, `/readyz`,
the dashboard's banner), then runs `gate_cycle.evaluate_all`, then `notify.deliver_due`.
Evaluations are unique per (rollout, window), so even a leader that lost its lease in the middle
of a tick cannot act twice on a window. A second job lets the leader prune history older than the
retention horizon, once an hour, in short batches (retention.py).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import FrameType

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.base import BaseScheduler
from apscheduler.schedulers.blocking import BlockingScheduler
from sqlalchemy.exc import IntegrityError

from gatekeeper import gate_cycle, notify
from gatekeeper.retention import RetentionJob
from gatekeeper.scheduler_status import LEASE_NAME
from gatekeeper.services import Services
from gatekeeper.store.db import Database
from gatekeeper.store.heartbeats import record_tick
from gatekeeper.store.leases import AdvisoryLock, give_up_lease, take_lease
from gatekeeper.tier_signals import MetricsSource

log = logging.getLogger(__name__)

ADVISORY_KEY = 0x6761_7465  # "gate": one key for every Gatekeeper scheduler sharing the database


def default_holder() -> str:
    """Return a name for this process that is unique across hosts and restarts."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class SchedulerLease:
    """The lease row (and on Postgres the advisory lock) that makes one scheduler the leader."""

    def __init__(self, db: Database, *, holder: str, ttl_s: float, name: str = LEASE_NAME,
                 interval_s: float | None = None) -> None:
        self.db = db
        self.holder = holder
        self.ttl_s = ttl_s
        self.interval_s = interval_s or ttl_s / 3
        self.name = name
        self.lock = AdvisoryLock(db, ADVISORY_KEY)

    def acquire(self, *, now: float) -> bool:
        """Take or renew the lease; return whether this process leads until now + ttl."""
        if not self.db.is_sqlite and not self.lock.try_acquire():
            return False
        try:
            with self.db.transaction() as db:
                leading = take_lease(self.name, holder=self.holder, expires_at=now + self.ttl_s, now=now, db=db)
                if leading:
                    record_tick(self.name, holder=self.holder, now=now, interval_s=self.interval_s, db=db)
                return leading
        except IntegrityError:  # another process inserted the first lease row at the same moment
            return False

    def release(self) -> None:
        """Give the lease up at once, so a standby takes over on its next tick."""
        try:
            with self.db.transaction() as db:
                give_up_lease(self.name, holder=self.holder, db=db)
        finally:
            self.lock.release()


@dataclass(frozen=True)
class TickResult:
    """What one tick did: whether this process led, and what it evaluated and delivered."""

    leader: bool
    outcomes: list[gate_cycle.GateOutcome] = field(default_factory=list)
    delivered: int = 0
    failed: int = 0


class GateScheduler:
    """Tick every `interval_s`: lead or stand by; as leader, evaluate gates and deliver notifications."""

    def __init__(self, svc: Services, source: MetricsSource, *, interval_s: float = 5.0,
                 lease_ttl_s: float | None = None, holder: str | None = None,
                 sender: notify.WebhookSender | None = None, clock: Callable[[], float] = time.time) -> None:
        self.svc = svc
        self.source = source
        self.interval_s = interval_s
        self.lease = SchedulerLease(svc.db, holder=holder or default_holder(),
                                    ttl_s=lease_ttl_s or max(15.0, 3 * interval_s), interval_s=interval_s)
        self.sender = sender or notify.WebhookSender(svc.settings.webhook_urls)
        self.clock = clock
        self.leading = False
        self._background: BackgroundScheduler | None = None
        self.retention = RetentionJob(svc.db, older_than_s=svc.settings.retention_s,
                                      batch=svc.settings.retention_batch)

    def tick(self) -> TickResult:
        """Run one cycle if this process leads; never raises."""
        try:
            return self._tick()
        except Exception:  # noqa: BLE001 - the next tick must run whatever this one hit
            log.exception("scheduler tick failed")
            return TickResult(leader=self.leading)

    def _tick(self) -> TickResult:
        leading = self.lease.acquire(now=self.clock())
        if leading != self.leading:
            log.info("scheduler %s %s", self.lease.holder, "leads" if leading else "stands by")
            self.leading = leading
        if not leading:
            return TickResult(leader=False)
        outcomes = gate_cycle.evaluate_all(self.svc, self.source, now=self.clock())
        stats = notify.deliver_due(self.svc.db, self.sender, now=self.clock())
        if outcomes or stats.delivered or stats.failed:
            log.info("scheduler %s evaluated %d rollouts (%s), delivered %d notifications, %d failed",
                     self.lease.holder, len(outcomes), _summary(outcomes), stats.delivered, stats.failed)
        return TickResult(True, outcomes, stats.delivered, stats.failed)

    def run(self) -> None:
        """Tick until SIGTERM or SIGINT, then give the lease up."""
        blocking = BlockingScheduler(timezone=UTC)
        self._add_job(blocking)

        def stop(signum: int, frame: FrameType | None) -> None:
            log.info("scheduler %s stopping on signal %d", self.lease.holder, signum)
            blocking.shutdown(wait=True)  # let a running tick finish before the lease goes

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        try:
            blocking.start()
        finally:
            self.lease.release()

    def start(self) -> None:
        """Tick in a background thread (the demo and tests); stop() ends it."""
        self._background = BackgroundScheduler(timezone=UTC)
        self._add_job(self._background)
        self._background.start()

    def stop(self) -> None:
        """Stop the background thread and give the lease up."""
        if self._background is not None:
            self._background.shutdown(wait=True)
            self._background = None
        self.lease.release()

    def prune(self) -> None:
        """As leader, prune history older than the retention horizon when a pass is due (retention.py)."""
        if self.leading:
            self.retention.run_due(now=self.clock())

    def _add_job(self, scheduler: BaseScheduler) -> None:
        scheduler.add_job(self.tick, "interval", seconds=self.interval_s, id="gatekeeper-tick",
                          next_run_time=datetime.now(UTC), max_instances=1, coalesce=True)
        scheduler.add_job(self.prune, "interval", seconds=60, id="gatekeeper-retention", max_instances=1,
                          coalesce=True)


def _summary(outcomes: list[gate_cycle.GateOutcome]) -> str:
    return ", ".join(f"{o.agent}: {o.result}{f' -> {o.transition}' if o.transition else ''}"
                     for o in outcomes[:10]) + (" ..." if len(outcomes) > 10 else "")
