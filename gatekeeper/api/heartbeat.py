"""`GET /v1/scheduler`: who leads the schedulers, when it last ticked, and whether that is recent."""

from __future__ import annotations

from datetime import datetime

from flask import Blueprint
from pydantic import BaseModel

from gatekeeper.api.auth import READERS, Caller
from gatekeeper.api.routing import endpoint
from gatekeeper.api.schemas import utc
from gatekeeper.errors import Unavailable
from gatekeeper.scheduler_status import read_health
from gatekeeper.services import services

bp = Blueprint("heartbeat", __name__)


class SchedulerView(BaseModel):
    """The scheduler as servers see it; `healthy` is false when none ticked within three intervals."""

    leader: str | None
    last_holder: str | None
    last_tick_at: datetime | None
    leading_since: datetime | None
    lag_s: float | None
    interval_s: float
    healthy: bool
    problem: str


@endpoint(bp, "/v1/scheduler", methods=["GET"], roles=READERS, response=SchedulerView)
def scheduler_view(*, caller: Caller) -> SchedulerView:
    """Show the scheduler's leader, last tick, lag and interval, and whether it is healthy."""
    health = read_health(services().db, now=services().clock())
    if health is None:
        raise Unavailable("the database is not answering; the scheduler's heartbeat cannot be read")
    return SchedulerView(leader=health.leader, last_holder=health.last_holder,
                         last_tick_at=utc(health.last_tick_at) if health.last_tick_at is not None else None,
                         leading_since=utc(health.leading_since) if health.leading_since is not None else None,
                         lag_s=health.lag_s, interval_s=health.interval_s, healthy=health.healthy,
                         problem=health.problem)
