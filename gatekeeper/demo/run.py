"""Run the demo: server (gunicorn), scheduler, simulated fleet and terminal progress, then stop cleanly."""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import requests

from gatekeeper.cli.ops import Remote
from gatekeeper.client import Gatekeeper
from gatekeeper.config import Settings, embedded_policy_dir
from gatekeeper.demo.fleet import SimulatedAgent
from gatekeeper.demo.policy_scaling import describe_overrides, write_demo_policies
from gatekeeper.demo.progress import Progress, summary_line
from gatekeeper.metric_sources import build_source
from gatekeeper.scheduler import GateScheduler
from gatekeeper.services import Services
from gatekeeper.store.tokens import create_token, create_user

Echo = Callable[[str], None]
STARTUP_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class DemoOptions:
    """What `gatekeeper demo` was asked to do."""

    db: Path | None = None
    port: int = 8000
    duration: float | None = None
    rate: float = 4.0
    workers: int = 2
    prometheus_url: str | None = None
    password: str | None = None


def run_demo(options: DemoOptions, echo: Echo) -> Path:
    """Run the demo until `duration` passes, Ctrl-C or SIGTERM; return the database path."""
    with _sigterm_as_interrupt():
        return _run(options, echo)


def _run(options: DemoOptions, echo: Echo) -> Path:
    workdir = Path(tempfile.mkdtemp(prefix="gatekeeper-demo-"))
    db_path = (options.db or workdir / "gatekeeper.db").resolve()
    _require_free_port(options.port)
    settings = _settings(options, workdir, db_path, echo)
    svc = Services.build(settings)
    svc.db.upgrade()
    password = options.password or secrets.token_urlsafe(9)
    rm_token, agent_tokens = _credentials(svc, password)
    url = f"http://127.0.0.1:{options.port}"
    stop = threading.Event()
    try:
        with _server(settings, options, workdir, echo), _scheduler(svc, settings):
            echo(f"dashboard: {url}/   sign in as admin / {password}")
            echo("CLI: in another terminal, paste this line, then try `gatekeeper status` or `gatekeeper approvals`:")
            echo(f"export GATEKEEPER_URL={url} GATEKEEPER_TOKEN={rm_token}")
            echo(f"API: {url}/openapi.json   metrics: {url}/metrics   server log: {workdir / 'server.log'}")
            _drive(svc, url, rm_token, agent_tokens, options, stop, echo)
    except KeyboardInterrupt as exc:
        echo(f"{_cause(exc)}: stopped")  # during start-up or shut-down; the context managers cleaned up
    finally:
        stop.set()
        svc.db.dispose()
    echo(f"database: {db_path}  (look again: GATEKEEPER_DATABASE_URL=sqlite:///{db_path} "
         f"GATEKEEPER_POLICY_DIR={settings.policy_dir} gatekeeper serve)")
    return db_path


def _settings(options: DemoOptions, workdir: Path, db_path: Path, echo: Echo) -> Settings:
    policy_dir = workdir / "policies"
    keep_queries = options.prometheus_url is not None
    written = write_demo_policies(embedded_policy_dir(), policy_dir, keep_queries=keep_queries)
    echo(f"policies: {', '.join(p.name for p in written)} from {embedded_policy_dir()}, scaled for the demo "
         f"into {policy_dir}:")
    echo(f"  {describe_overrides()}" + ("" if keep_queries else "; extra PromQL checks dropped (built-in source)"))
    source = f"Prometheus at {options.prometheus_url}" if options.prometheus_url else "the built-in metrics source"
    echo(f"gates read {source}; database {db_path}")
    # No secret key: the server's workers share the one made once and kept in the database, as in production.
    return Settings(database_url=f"sqlite:///{db_path}", policy_dir=policy_dir, policy_reload_s=2.0,
                    prometheus_url=options.prometheus_url).validated()


def _credentials(svc: Services, password: str) -> tuple[str, dict[str, str]]:
    now = time.time()
    agents = [a for loaded in svc.policies.snapshot().by_name.values() for a in loaded.policy.agents]
    with svc.db.transaction() as db:
        create_user("admin", password=password, role="release_manager", now=now, db=db)
        rm_token, _ = create_token("demo", role="release_manager", agent=None, now=now, db=db)
        tokens = {a: create_token(f"{a}-runtime", role="agent", agent=a, now=now, db=db)[0] for a in agents}
    return rm_token, tokens


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """Stop on SIGTERM (`kill`, `timeout`, a container stop) as on Ctrl-C, so the server is stopped too.

    Python's default SIGTERM ends the process at once, which would leave the server, in its own
    session, running. Signal handlers can only be set from the main thread; elsewhere, nothing changes.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt("SIGTERM")


def _cause(interrupt: KeyboardInterrupt) -> str:
    return str(interrupt) or "Ctrl-C"


@contextmanager
def _server(settings: Settings, options: DemoOptions, workdir: Path, echo: Echo) -> Iterator[None]:
    env = {**os.environ, "GATEKEEPER_DATABASE_URL": settings.database_url,
           "GATEKEEPER_POLICY_DIR": str(settings.policy_dir), "GATEKEEPER_POLICY_RELOAD": "2s"}
    command = [sys.executable, "-m", "gatekeeper.cli", "serve", "--bind", f"127.0.0.1:{options.port}",
               "--workers", str(options.workers), "--metrics-dir", str(workdir / "metrics")]
    with open(workdir / "server.log", "ab") as log:
        # Its own session: Ctrl-C reaches the demo, which then stops the server in order.
        server = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_ready(f"http://127.0.0.1:{options.port}/readyz", server, workdir / "server.log")
        echo(f"server: gunicorn with {options.workers} workers on http://127.0.0.1:{options.port} (pid {server.pid})")
        yield
    finally:
        echo("stopping the server")
        _terminate(server)


@contextmanager
def _scheduler(svc: Services, settings: Settings) -> Iterator[None]:
    scheduler = GateScheduler(svc, build_source(settings, svc.db), interval_s=1.0)
    scheduler.start()
    try:
        yield
    finally:
        scheduler.stop()


def _drive(svc: Services, url: str, rm_token: str, agent_tokens: dict[str, str], options: DemoOptions,
           stop: threading.Event, echo: Echo) -> None:
    rm = Remote(url, rm_token)
    policies = {a: loaded.policy for loaded in svc.policies.snapshot().by_name.values() for a in loaded.policy.agents}
    for agent, policy in policies.items():
        rm.call("POST", "/v1/agents", {"name": agent, "policy": policy.name, "stable_version": "v1"})
        rm.call("POST", f"/v1/agents/{agent}/rollouts", {"version": "v2", "reason": "demo: a new build to roll out"})
    fleet = [SimulatedAgent(Gatekeeper(url, agent_tokens[a], timeout=10.0), rm, a, p, rate=options.rate, stop=stop,
                            announce=echo, seed=n) for n, (a, p) in enumerate(policies.items())]
    progress = Progress(rm, list(policies), stop=stop, echo=echo)
    for thread in [*fleet, progress]:
        thread.start()
    echo(f"fleet: {', '.join(f'{a.agent} ({a.behaviour.kind})' for a in fleet)} at {options.rate:g} sessions/s each; "
         + (f"stopping after {options.duration:g}s" if options.duration else "Ctrl-C stops"))
    try:
        stop.wait(options.duration)
    except KeyboardInterrupt as exc:
        echo(f"{_cause(exc)}: stopping")
    stop.set()
    for thread in [*fleet, progress]:
        thread.join(timeout=15)
    progress.poll_transitions()
    echo("final status:")
    for agent in rm.call("GET", "/v1/agents"):
        echo(summary_line(agent))


def _require_free_port(port: int) -> None:
    with socket.socket() as probe:
        # As gunicorn does: connections of an earlier run in TIME_WAIT must not count as "in use".
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            raise SystemExit(f"gatekeeper demo: port {port} is in use; choose another with --port") from None


def _wait_ready(url: str, server: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"gatekeeper demo: the server exited; its log:\n{log.read_text()[-3000:]}")
        try:
            if requests.get(url, timeout=1).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    _terminate(server)
    raise SystemExit(f"gatekeeper demo: the server was not ready within {STARTUP_TIMEOUT_S:g}s; see {log}")


def _terminate(server: subprocess.Popen[bytes]) -> None:
    if server.poll() is None:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=5)
