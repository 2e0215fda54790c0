"""Real `gatekeeper serve` processes started as a newcomer starts them (no GATEKEEPER_SECRET_KEY), for tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gatekeeper.store.db import Database
from gatekeeper.store.tokens import create_token, create_user
from tests.support.processes import wait_ready
from tests.support.services import free_port

POLICIES = Path(__file__).resolve().parents[2] / "policies"
# The WSGI server every `gatekeeper serve` a test starts runs under, unless the test names one:
# GATEKEEPER_TEST_SERVER=granian runs the whole suite's servers under granian.
TEST_SERVER = os.environ.get("GATEKEEPER_TEST_SERVER", "gunicorn")


@dataclass
class Server:
    """One `gatekeeper serve` process tree (gunicorn or granian: a master and workers) on a loopback port."""

    process: subprocess.Popen[bytes]
    url: str
    log: Path
    metrics_dir: Path

    def stop(self) -> None:
        """Stop it as an operator would (SIGTERM to the master only), killing the group if it lingers past 20 s."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=5)


def server_env(database_url: str, policy_dir: Path, **extra: str) -> dict[str, str]:
    """The environment of a server started with no GATEKEEPER_SECRET_KEY (the case that used to break)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEKEEPER_")}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    env.update(GATEKEEPER_DATABASE_URL=database_url, GATEKEEPER_POLICY_DIR=str(policy_dir), **extra)
    return env


def start_serve(tmp_path: Path, *, database_url: str, policy_dir: Path = POLICIES, workers: int = 2,
                name: str = "serve", args: Sequence[str] = (), env: dict[str, str] | None = None,
                server: str | None = None) -> Server:
    """Start `gatekeeper serve` (under `server`, default TEST_SERVER) and wait until /readyz answers 200."""
    port = free_port()
    log, metrics_dir = tmp_path / f"{name}.log", tmp_path / f"{name}-metrics"
    command = [sys.executable, "-c", "from gatekeeper.cli import main; main()", "serve", "--bind",
               f"127.0.0.1:{port}", "--workers", str(workers), "--metrics-dir", str(metrics_dir),
               "--server", server or TEST_SERVER, *args]
    with open(log, "wb") as out:
        process = subprocess.Popen(command, env=env or server_env(database_url, policy_dir), stdout=out,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    server = Server(process, f"http://127.0.0.1:{port}", log, metrics_dir)
    try:
        wait_ready(f"{server.url}/readyz", process, log)
    except AssertionError:
        server.stop()
        raise
    return server


@contextmanager
def server_pool(tmp_path: Path) -> Iterator[Any]:
    """Yield `start(**kwargs) -> Server`; every server started through it is stopped on exit."""
    started: list[Server] = []

    def start(**kwargs: Any) -> Server:
        started.append(start_serve(tmp_path, name=f"serve{len(started)}", **kwargs))
        return started[-1]

    try:
        yield start
    finally:
        for server in started:
            server.stop()


def prepare_database(url: str, *, users: dict[str, str] | None = None, tokens: Sequence[str] = ()
                     ) -> dict[str, str]:
    """Create the schema, dashboard users (release managers) and tokens by role; return the tokens."""
    database = Database(url)
    try:
        database.upgrade()
        with database.transaction() as db:
            for username, password in (users or {}).items():
                create_user(username, password=password, role="release_manager", now=time.time(), db=db)
            return {role: create_token(role, role=role, agent=None, now=time.time(), db=db)[0] for role in tokens}
    finally:
        database.dispose()

