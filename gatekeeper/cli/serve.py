"""`gatekeeper serve`: the API and dashboard under gunicorn (or granian), metrics correct across workers.

`--server granian` (or GATEKEEPER_SERVER=granian) runs the same app under granian's WSGI interface
instead, with the same workers, bind address, metrics folder, scheduler and signals; granian is the
optional extra `gatekeeper[granian]`. What differs is in the README ("Servers").

With `--with-scheduler` it also runs one `gatekeeper scheduler` process beside the workers (for
single-node installs): serve then stays as the parent of both, passes SIGTERM and SIGINT on,
restarts the scheduler if it dies, and stops it when the server stops. Replicas that all do this
still have one leader: the schedulers share the lease.
"""

from __future__ import annotations

import importlib.util
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import FrameType

import click

from gatekeeper.cli.scheduler import duration_seconds
from gatekeeper.config import Settings
from gatekeeper.errors import ConfigError

RESTART_DELAY_S = 5.0
STOP_TIMEOUT_S = 20.0

APP = "gatekeeper.wsgi:app"
GRANIAN_APP = "gatekeeper.wsgi:granian_app"  # the app behind the limits gunicorn keeps and granian does not
# gunicorn's sync and gthread workers, answering malformed HTTP (request line over 4 KiB, headers
# over 8 KiB, bad chunks) with the JSON error body instead of gunicorn's HTML page.
WORKERS = {False: "gatekeeper.api.workers.JsonSyncWorker", True: "gatekeeper.api.workers.JsonThreadWorker"}
SERVERS = ("gunicorn", "granian")
GRACEFUL_TIMEOUT_S = 10
MAX_HEADER_READ_TIMEOUT_S = 60  # granian's bound on --http1-header-read-timeout


@click.command()
@click.option("--server", type=click.Choice(SERVERS), default="gunicorn", show_default=True, envvar="GATEKEEPER_SERVER",
              help="WSGI server (GATEKEEPER_SERVER); granian needs `pip install 'gatekeeper[granian]'`.")
@click.option("--bind", default="127.0.0.1:8000", show_default=True, help="HOST:PORT to listen on.")
@click.option("--workers", default=2, show_default=True, type=click.IntRange(1, 64), help="Worker processes.")
@click.option("--threads", default=1, show_default=True, type=click.IntRange(1, 64),
              help="Threads per worker (gunicorn: more than 1 uses gthread workers; granian: blocking threads).")
@click.option("--upgrade/--no-upgrade", default=True, show_default=True,
              help="Create or upgrade the database schema before serving.")
@click.option("--metrics-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder of the workers' metric files (default: PROMETHEUS_MULTIPROC_DIR or a temp folder).")
@click.option("--timeout", default=30, show_default=True, type=click.IntRange(1, 3600),
              help="Seconds before a silent worker is restarted (granian: before a client's headers must be in).")
@click.option("--with-scheduler", is_flag=True,
              help="Also run one scheduler beside the workers (single-node installs); stopped with the server.")
@click.option("--scheduler-interval", default="5s", show_default=True, callback=duration_seconds,
              help="How often that scheduler ticks.")
def serve(server: str, bind: str, workers: int, threads: int, upgrade: bool, metrics_dir: Path | None, timeout: int,
          with_scheduler: bool, scheduler_interval: float) -> None:
    """Serve the API and the dashboard with gunicorn or granian."""
    if server == "granian" and not granian_installed():
        raise click.ClickException("granian is not installed: pip install 'gatekeeper[granian]' "
                                   "(or serve with --server gunicorn)")
    make = granian_command if server == "granian" else gunicorn_command
    command = make(bind=bind, workers=workers, threads=threads, timeout=timeout)
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    if upgrade:
        _upgrade(settings.database_url)
    folder = _fresh_metrics_dir(metrics_dir, bind)
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(folder)}
    click.echo(f"gatekeeper: serving on http://{bind} with {workers} {server} workers; metrics files in {folder}",
               err=True)
    if with_scheduler:
        click.echo(f"gatekeeper: and a scheduler ticking every {scheduler_interval:g}s", err=True)
        sys.exit(supervise(command, scheduler_command(interval_s=scheduler_interval), env=env))
    # exec, not fork: prometheus_client picks multiprocess mode when it is first imported,
    # so the server must start in a fresh interpreter that sees PROMETHEUS_MULTIPROC_DIR.
    os.execve(sys.executable, command, env)


def gunicorn_command(*, bind: str, workers: int, threads: int, timeout: int, app: str = APP) -> list[str]:
    """Return the gunicorn command line `serve` runs (the benchmarks reuse it)."""
    return [sys.executable, "-m", "gunicorn", app, "--bind", bind, "--workers", str(workers),
            "--threads", str(threads), "--timeout", str(timeout), "--graceful-timeout", str(GRACEFUL_TIMEOUT_S),
            "--worker-class", WORKERS[threads > 1], "--log-level", "warning"]


def granian_command(*, bind: str, workers: int, threads: int, timeout: int, app: str = GRANIAN_APP) -> list[str]:
    """Return the granian command line `serve --server granian` runs (the benchmarks may reuse it)."""
    if bind.startswith("unix:"):
        where = ["--uds", bind.removeprefix("unix:")]
    else:
        host, _, port = bind.rpartition(":")
        if not host or not port.isdigit():
            raise click.BadParameter(f"{bind!r} is not HOST:PORT", param_hint="--bind")
        where = ["--host", host.strip("[]"), "--port", port]
    header_timeout_ms = min(timeout, MAX_HEADER_READ_TIMEOUT_S) * 1000
    # HTTP/1 only, as gunicorn: no h2c upgrade path that the hostile-input battery never walked.
    return [sys.executable, "-m", "granian", app, "--interface", "wsgi", *where, "--workers", str(workers),
            "--blocking-threads", str(threads), "--runtime-mode", "st", "--http", "1", "--no-ws",
            "--http1-header-read-timeout", str(header_timeout_ms), "--respawn-failed-workers",
            "--workers-kill-timeout", str(GRACEFUL_TIMEOUT_S), "--no-access-log", "--log-level", "warning"]


def granian_installed() -> bool:
    """Return whether granian (the `granian` extra) can be run."""
    return importlib.util.find_spec("granian") is not None


def scheduler_command(*, interval_s: float) -> list[str]:
    """Return the command line of the scheduler `serve --with-scheduler` runs."""
    return [sys.executable, "-m", "gatekeeper.cli", "scheduler", "--interval", f"{interval_s:g}s"]


def supervise(server_command: list[str], scheduler_command: list[str], *, env: dict[str, str]) -> int:
    """Run the server and a scheduler until the server exits; return the server's exit code."""
    server = subprocess.Popen(server_command, env=env)
    scheduler = subprocess.Popen(scheduler_command, env=env)
    stopping = False

    def pass_on(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        for child in (server, scheduler):
            if child.poll() is None:
                child.send_signal(signum)

    signal.signal(signal.SIGTERM, pass_on)
    signal.signal(signal.SIGINT, pass_on)
    try:
        while server.poll() is None:
            time.sleep(0.2)
            if scheduler.poll() is not None and not stopping:
                click.echo(f"gatekeeper: the scheduler exited ({scheduler.returncode}); restarting it in "
                           f"{RESTART_DELAY_S:g}s", err=True)
                time.sleep(RESTART_DELAY_S)
                if not stopping:
                    scheduler = subprocess.Popen(scheduler_command, env=env)
    finally:
        _stop(scheduler)
        _stop(server)
    return server.returncode or 0


def _stop(child: subprocess.Popen[bytes]) -> None:
    if child.poll() is None:
        child.terminate()
        try:
            child.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait(timeout=5)


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


__all__ = ["granian_command", "gunicorn_command", "scheduler_command", "serve", "supervise"]
