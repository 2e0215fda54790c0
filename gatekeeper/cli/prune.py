"""`gatekeeper db prune`: delete history older than the retention horizon now, in small batches."""

from __future__ import annotations

import time

import click

from gatekeeper.config import Settings
from gatekeeper.core.policy import parse_duration
from gatekeeper.retention import Pruned, prune
from gatekeeper.store.db import Database


def _duration(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        seconds = parse_duration(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    if seconds < 86_400:
        raise click.BadParameter("keep at least 1d of history")
    return seconds


@click.command("prune")
@click.option("--older-than", "older_than", default=None,
              help="Horizon such as 30d (default: GATEKEEPER_RETENTION, 30d).")
@click.option("--dry-run", is_flag=True, help="Count what would be deleted; delete nothing.")
@click.option("--db", "db_url", envvar="GATEKEEPER_DATABASE_URL",
              help="Database URL (default: GATEKEEPER_DATABASE_URL or sqlite:///gatekeeper.db).")
def db_prune(older_than: str | None, dry_run: bool, db_url: str | None) -> None:
    """Delete sessions, decisions and gate evaluations older than the horizon (rolled up per day first).

    What an open rollout's current tier needs and every approval's session are kept; transitions
    and approvals are never deleted. Safe beside running servers: each batch is a short transaction.
    """
    settings = Settings.from_env()
    horizon = _duration(older_than) or settings.retention_s
    database = Database(db_url or settings.database_url)

    def report(what: str, total: Pruned) -> None:
        click.echo(f"pruning {what}: {total}")

    try:
        database.upgrade()
        total = prune(database, older_than_s=horizon, now=time.time(), batch=settings.retention_batch,
                      dry_run=dry_run, progress=None if dry_run else report)
    finally:
        database.dispose()
    click.echo(f"{'would prune' if dry_run else 'pruned'} {total} older than {horizon / 86_400:g} days")
