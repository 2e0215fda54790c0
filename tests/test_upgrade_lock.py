"""Many upgraders at once on an empty database: every `db upgrade` exits 0, every `serve` replica gets ready.

Each process imports Gatekeeper, says it is armed, then waits for one byte on stdin; the test
releases them all together, so the upgrades race for real instead of being spread out by imports.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlmodel import SQLModel

from gatekeeper.store import schema
from gatekeeper.store.db import Database
from tests.support.app import POLICIES
from tests.support.services import PostgresServer, free_port

ARMED_WITHIN_S = 60.0
READY_WITHIN_S = 60.0
# Import the CLI, say so by creating the file named in argv[1], wait for the go, then run the command.
ARMED_CLI = ("import sys, pathlib; from gatekeeper.cli import main; armed = sys.argv.pop(1); "
             "pathlib.Path(armed).touch(); sys.stdin.readline(); main()")


@pytest.fixture(params=["sqlite", "postgres"])
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'empty.db'}"
    server: PostgresServer = request.getfixturevalue("postgres")
    return server.create_database("gk_race")


class Armed:
    """Processes of the `gatekeeper` CLI started together, released together, and always stopped."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.processes: list[subprocess.Popen[bytes]] = []
        self.logs: list[Path] = []

    def start(self, *args: str, env: dict[str, str]) -> None:
        """Start one command; it waits, armed, until `release`."""
        n = len(self.processes)
        self.logs.append(self.folder / f"process-{n}.log")
        with open(self.logs[-1], "wb") as log:
            self.processes.append(subprocess.Popen(
                [sys.executable, "-c", ARMED_CLI, str(self.folder / f"armed-{n}"), *args], env=env,
                stdin=subprocess.PIPE, stdout=log, stderr=subprocess.STDOUT, start_new_session=True))

    def release(self) -> None:
        """Wait until every process is armed, then let them all go at once."""
        deadline = time.monotonic() + ARMED_WITHIN_S
        while not all((self.folder / f"armed-{n}").exists() for n in range(len(self.processes))):
            assert time.monotonic() < deadline, "the processes did not import Gatekeeper in time"
            assert all(p.poll() is None for p in self.processes), self.output()
            time.sleep(0.05)
        for process in self.processes:
            assert process.stdin is not None
            process.stdin.write(b"go\n")
            process.stdin.flush()
        for process in self.processes:
            assert process.stdin is not None
            process.stdin.close()

    def output(self) -> str:
        return "\n".join(f"--- {log.name}\n{log.read_text()[-2000:]}" for log in self.logs if log.exists())

    def stop(self) -> None:
        """Stop every process group still running: SIGTERM, then SIGKILL after 15 s."""
        for process in self.processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=5)


@pytest.fixture
def armed(tmp_path: Path) -> Iterator[Armed]:
    started = Armed(tmp_path)
    try:
        yield started
    finally:
        started.stop()


def _env(url: str) -> dict[str, str]:
    env = {**os.environ, "GATEKEEPER_DATABASE_URL": url, "GATEKEEPER_POLICY_DIR": str(POLICIES),
           "GATEKEEPER_SECRET_KEY": "test-secret"}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    return env


def _assert_at_head(url: str) -> None:
    database = Database(url)
    try:
        with database.engine.connect() as connection:
            assert schema.current(connection) == schema.head()
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            assert compare_metadata(context, SQLModel.metadata) == []
    finally:
        database.dispose()


def test_concurrent_db_upgrades_all_succeed(empty_url: str, armed: Armed) -> None:
    for _ in range(4):
        armed.start("db", "upgrade", env=_env(empty_url))
    armed.release()
    codes = [process.wait(timeout=120) for process in armed.processes]
    assert codes == [0, 0, 0, 0], armed.output()
    assert armed.output().count(f"schema revision {schema.head()} at") == 4, armed.output()
    _assert_at_head(empty_url)


def test_three_serve_replicas_started_together_on_an_empty_postgres_all_get_ready(
        postgres: PostgresServer, armed: Armed, tmp_path: Path) -> None:
    url = postgres.create_database("gk_replicas")
    ports = [free_port() for _ in range(3)]
    for n, port in enumerate(ports):
        armed.start("serve", "--bind", f"127.0.0.1:{port}", "--workers", "1",
                    "--metrics-dir", str(tmp_path / f"metrics-{n}"), env=_env(url))
    armed.release()
    waiting = set(ports)
    deadline = time.monotonic() + READY_WITHIN_S
    while waiting and time.monotonic() < deadline:
        assert all(process.poll() is None for process in armed.processes), armed.output()
        for port in sorted(waiting):
            try:
                if requests.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                    waiting.discard(port)
            except requests.RequestException:
                pass
        time.sleep(0.1)
    assert not waiting, f"replicas on {sorted(waiting)} never answered /readyz 200:\n{armed.output()}"
    _assert_at_head(url)
