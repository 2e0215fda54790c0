"""`gatekeeper demo`: the whole system on the embedded defaults, with a simulated fleet."""

from __future__ import annotations

from pathlib import Path

import click


@click.command()
@click.option("--db", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="SQLite file to use (default: a new file in a temporary folder, kept afterwards).")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65535),
              help="Port of the server on 127.0.0.1 (the example prometheus.yml scrapes 8000).")
@click.option("--duration", type=click.FloatRange(min=1), default=None,
              help="Stop after this many seconds (default: run until Ctrl-C).")
@click.option("--rate", default=4.0, show_default=True, type=click.FloatRange(0.1, 50),
              help="Simulated sessions per second per agent.")
@click.option("--workers", default=2, show_default=True, type=click.IntRange(1, 16), help="gunicorn workers.")
@click.option("--prometheus-url", default=None,
              help="Read gates from this Prometheus (it must scrape the demo's /metrics) instead of the database.")
@click.option("--password", envvar="GATEKEEPER_DEMO_PASSWORD", default=None,
              help="Dashboard password of the demo's `admin` user (default: random, printed).")
def demo(db: Path | None, port: int, duration: float | None, rate: float, workers: int,
         prometheus_url: str | None, password: str | None) -> None:
    """Run server, scheduler and a simulated fleet; watch rollouts move in the terminal and the dashboard."""
    # Imported here: the demo uses the CLI's API client, and `gatekeeper --help` need not load it.
    from gatekeeper.demo.run import DemoOptions, run_demo

    options = DemoOptions(db=db, port=port, duration=duration, rate=rate, workers=workers,
                          prometheus_url=prometheus_url.rstrip("/") if prometheus_url else None, password=password)
    run_demo(options, lambda line: click.echo(line))
