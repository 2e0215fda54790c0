"""`gatekeeper scheduler`: evaluate gates and deliver notifications; one process leads at a time."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import click

from gatekeeper.config import Settings
from gatekeeper.core.policy import parse_duration
from gatekeeper.errors import ConfigError

if TYPE_CHECKING:  # imported lazily below: `gatekeeper --help` need not load APScheduler and Prometheus
    from gatekeeper.scheduler import GateScheduler


def duration_seconds(ctx: click.Context, param: click.Parameter, value: str | None) -> float | None:
    """Parse a duration option (`5s`, `1m` or plain seconds) into seconds above zero."""
    if value is None:
        return None
    try:
        seconds = float(value) if value.isascii() and value.replace(".", "", 1).isdigit() else parse_duration(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    if seconds <= 0:
        raise click.BadParameter("must be longer than zero")
    return seconds


@click.command("scheduler")
@click.option("--once", is_flag=True, help="Run one cycle (if this process can lead) and exit.")
@click.option("--interval", default="5s", show_default=True, callback=duration_seconds,
              help="How often to tick; each policy's gate.interval decides when a rollout is evaluated.")
@click.option("--lease-ttl", default=None, callback=duration_seconds,
              help="How long leadership lasts without renewal [default: max(15s, 3 x interval)].")
def scheduler(once: bool, interval: float, lease_ttl: float | None) -> None:
    """Evaluate every rollout's gate at its policy's interval and act on it; deliver notifications."""
    from gatekeeper.metric_sources import build_source
    from gatekeeper.scheduler import GateScheduler
    from gatekeeper.services import Services

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        raise click.ClickException(exc.message) from None
    svc = Services.build(settings)
    runner = GateScheduler(svc, build_source(settings, svc.db), interval_s=interval, lease_ttl_s=lease_ttl)
    source = "Prometheus at " + settings.prometheus_url if settings.prometheus_url else "the built-in source"
    click.echo(f"scheduler {runner.lease.holder}: ticking every {interval:g}s, metrics from {source}", err=True)
    if once:
        _once(runner)
    else:
        runner.run()


def _once(runner: GateScheduler) -> None:
    try:
        result = runner.tick()
    finally:
        runner.lease.release()
    if not result.leader:
        click.echo("another scheduler holds the lease; nothing done", err=True)
        return
    for outcome in result.outcomes:
        moved = f" -> {outcome.transition}" if outcome.transition else ""
        click.echo(f"{outcome.agent}: {outcome.stage} tier {outcome.tier}: {outcome.result}{moved}")
    click.echo(f"{len(result.outcomes)} evaluated, {result.delivered} notifications delivered", err=True)
