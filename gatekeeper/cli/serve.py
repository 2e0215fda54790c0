"""`gatekeeper serve`: the API and dashboard under gunicorn, metrics correct across workers."""

from __future__ import annotations

import os
import re
import sys
import tempfile
from pathlib import Path

import click

from gatekeeper.config import Settings
from gatekeeper.errors import ConfigError

APP = "gatekeeper.wsgi:app"
# gunicorn's sync and gthread workers, answering malformed HTTP (request line over 4 KiB, headers
# over 8 KiB, bad chunks) with the JSON error body instead of gunicorn's HTML page.
WORKERS = {False: "gatekeeper.api.workers.JsonSyncWorker", True: "gatekeeper.api.workers.JsonThreadWorker"}


@click.command()
@click.option("--bind", default="127.0.0.1:8000", show_default=True, help="HOST:PORT to listen on.")
@click.option("--workers", default=2, show_default=True, type=click.IntRange(1, 64), help="Worker processes.")
@click.option("--threads", default=1, show_default=True, type=click.IntRange(1, 64),
              help="Threads per worker (more than 1 uses gunicorn's gthread workers).")
@click.option("--upgrade/--no-upgrade", default=True, show_default=True,
              help="Create or upgrade the database schema before serving.")
@click.option("--metrics-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder of the workers' metric files (default: PROMETHEUS_MULTIPROC_DIR or a temp folder).")
@click.option("--timeout", default=30, show_default=True, type=click.IntRange(1, 3600),
              help="Seconds before a silent worker is restarted.")
def serve(bind: str, workers: int, threads: int, upgrade: bool, metrics_dir: Path | None, timeout: int) -> None:
    """Serve the API and the dashboard with gunicorn."""
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    if upgrade:
        _upgrade(settings.database_url)
    folder = _fresh_metrics_dir(metrics_dir, bind)
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(folder)}
    click.echo(f"gatekeeper: serving on http://{bind} with {workers} workers; metrics files in {folder}", err=True)
    # exec, not fork: prometheus_client picks multiprocess mode when it is first imported,
    # so gunicorn must start in a fresh interpreter that sees PROMETHEUS_MULTIPROC_DIR.
    os.execve(sys.executable, gunicorn_command(bind=bind, workers=workers, threads=threads, timeout=timeout),
              env)


def gunicorn_command(*, bind: str, workers: int, threads: int, timeout: int, app: str = APP) -> list[str]:
    """Return the gunicorn command line `serve` runs (the benchmarks reuse it)."""
    return [sys.executable, "-m", "gunicorn", app, "--bind", bind, "--workers", str(workers),
            "--threads", str(threads), "--timeout", str(timeout), "--graceful-timeout", "10",
            "--worker-class", WORKERS[threads > 1], "--log-level", "warning"]


def _upgrade(url: str) -> None:
    from gatekeeper.store.db import Database

    database = Database(url)
    try:
        database.upgrade()
    finally:
        database.dispose()


def _fresh_metrics_dir(given: Path | None, bind: str) -> Path:
    """Return an empty folder for this server's metric files; old files would be counted again."""
    configured = given or (Path(p) if (p := os.environ.get("PROMETHEUS_MULTIPROC_DIR")) else None)
    folder = configured or Path(tempfile.gettempdir()) / f"gatekeeper-metrics-{re.sub(r'[^0-9A-Za-z]', '-', bind)}"
    if folder.exists():
        for stale in folder.glob("*.db"):
            stale.unlink()
    folder.mkdir(parents=True, exist_ok=True)
    return folder


__all__ = ["gunicorn_command", "serve"]
