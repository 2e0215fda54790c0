"""Whether a scheduler is evaluating gates: read by /v1/scheduler, /readyz, the dashboard and `status`.

The leading scheduler writes a heartbeat row on every tick (see scheduler.py). A server judges it:
healthy while the last tick is within three of the scheduler's own intervals. Without a healthy
scheduler nothing evaluates gates, so rollouts sit where they are and nothing else would say why.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.exc import SQLAlchemyError

from gatekeeper.store.db import Database
from gatekeeper.store.heartbeats import last_tick, lease_of

LEASE_NAME = "scheduler"
DEFAULT_INTERVAL_S = 5.0  # `gatekeeper scheduler`'s default tick
MISSED_TICKS = 3  # intervals without a tick before the scheduler counts as missing
HOW_TO_START = "run `gatekeeper scheduler`, or `gatekeeper serve --with-scheduler` on a single node"


@dataclass(frozen=True)
class SchedulerHealth:
    """The scheduler as servers see it: who leads, when it last ticked, and whether that is recent."""

    leader: str | None  # the holder of an unexpired lease
    last_holder: str | None  # who ticked last
    last_tick_at: float | None
    leading_since: float | None
    interval_s: float
    lag_s: float | None
    healthy: bool

    @property
    def limit_s(self) -> float:
        """Return how long without a tick still counts as healthy."""
        return MISSED_TICKS * self.interval_s

    @property
    def problem(self) -> str:
        """Return what is wrong and what to do, for people (empty when healthy)."""
        if self.healthy:
            return ""
        since = ("no scheduler has ever ticked" if self.last_tick_at is None
                 else f"the last tick was {self.lag_s or 0:.0f}s ago")
        return f"{since}, so no gate is evaluated and rollouts do not move; {HOW_TO_START}"

    @property
    def summary(self) -> str:
        """Return the short state `/readyz` shows: ok and who, or none within the limit."""
        if self.healthy:
            return f"ok: {self.last_holder} ticked {self.lag_s or 0:.0f}s ago (every {self.interval_s:g}s)"
        return f"none within {self.limit_s:g}s"


def judge(*, leader: str | None, last_holder: str | None, last_tick_at: float | None,
          leading_since: float | None, interval_s: float | None, now: float) -> SchedulerHealth:
    """Judge a heartbeat at `now`: healthy when the last tick is within three intervals."""
    interval = interval_s or DEFAULT_INTERVAL_S
    lag = None if last_tick_at is None else max(0.0, now - last_tick_at)
    healthy = lag is not None and lag <= MISSED_TICKS * interval
    return SchedulerHealth(leader, last_holder, last_tick_at, leading_since, interval, lag, healthy)


def read_health(database: Database, *, now: float) -> SchedulerHealth | None:
    """Read the heartbeat and lease and judge them; None when the database does not answer."""
    try:
        with database.reading() as db:
            beat, lease = last_tick(LEASE_NAME, db=db), lease_of(LEASE_NAME, db=db)
            leader = lease.holder if lease is not None and lease.expires_at > now else None
            return judge(leader=leader, last_holder=beat.holder if beat else None,
                         last_tick_at=beat.ticked_at if beat else None,
                         leading_since=beat.leading_since if beat else None,
                         interval_s=beat.interval_s if beat else None, now=now)
    except SQLAlchemyError:
        return None
