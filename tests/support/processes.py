"""Real `gatekeeper serve` and `gatekeeper scheduler` processes, and the CLI run as a subprocess.

    with Deployment(tmp_path, policy_dir=folder) as deployment:
        server = deployment.serve(workers=2)          # waits for /readyz
        deployment.scheduler(interval="1s")
        deployment.cli("agent", "list", token=rm)     # CompletedProcess, URL and token in its environment

Every process started is stopped (SIGTERM to its process group, then SIGKILL) when the block ends.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Self

import requests

from tests.support.services import _Managed, free_port

READY_TIMEOUT_S = 30.0


def stop_group(process: subprocess.Popen[bytes]) -> None:
    """Stop a process started in its own session: SIGTERM its group, then SIGKILL after 15 s."""
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=5)
    except ProcessLookupError:
        pass


def wait_ready(url: str, process: subprocess.Popen[bytes], log: Path, *, timeout: float = READY_TIMEOUT_S) -> None:
    """Wait until `url` answers 200; fail with the log's tail if the process exits or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"the process exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if requests.get(url, timeout=1).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{url} was not ready within {timeout:g}s:\n{log.read_text()[-3000:]}")


class Deployment(_Managed):
    """One database, one policy folder, and the real processes a release manager would run on them."""

    def __init__(self, tmp_path: Path, *, policy_dir: Path, database_url: str | None = None) -> None:
        self.dir = tmp_path
        self.policy_dir = policy_dir
        self.database_url = database_url or f"sqlite:///{tmp_path / 'gatekeeper.db'}"
        self.url = ""
        self.processes: list[subprocess.Popen[bytes]] = []

    @property
    def env(self) -> dict[str, str]:
        """The environment every process and CLI call gets."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("GATEKEEPER_")}
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        env.update(GATEKEEPER_DATABASE_URL=self.database_url, GATEKEEPER_POLICY_DIR=str(self.policy_dir),
                   GATEKEEPER_SECRET_KEY="test-secret", GATEKEEPER_POLICY_RELOAD="1s")
        if self.url:
            env["GATEKEEPER_URL"] = self.url
        return env

    def start(self) -> Self:
        """Nothing runs until serve() or scheduler() is called."""
        return self

    def stop(self) -> None:
        """Stop every process this deployment started, newest first."""
        for process in reversed(self.processes):
            stop_group(process)

    def spawn(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        """Start `gatekeeper ARGS...` in its own session, logging to `<name>.log`."""
        command = [sys.executable, "-c", "from gatekeeper.cli import main; main()", *args]
        with open(self.dir / f"{name}.log", "ab") as log:
            process = subprocess.Popen(command, env=self.env, stdout=log, stderr=subprocess.STDOUT, cwd=self.dir,
                                       start_new_session=True)
        self.processes.append(process)
        return process

    def serve(self, *, workers: int = 2) -> str:
        """Start `gatekeeper serve` on a free port; return its URL once /readyz answers."""
        port = free_port()
        process = self.spawn(f"serve-{port}", "serve", "--bind", f"127.0.0.1:{port}", "--workers", str(workers),
                             "--metrics-dir", str(self.dir / f"metrics-{port}"),
                             "--server", os.environ.get("GATEKEEPER_TEST_SERVER", "gunicorn"))
        self.url = f"http://127.0.0.1:{port}"
        wait_ready(f"{self.url}/readyz", process, self.dir / f"serve-{port}.log")
        return self.url

    def scheduler(self, *, interval: str = "1s") -> subprocess.Popen[bytes]:
        """Start `gatekeeper scheduler`."""
        return self.spawn("scheduler", "scheduler", "--interval", interval)

    def cli(self, *args: str, token: str | None = None, check: bool = True, **options: Any
            ) -> subprocess.CompletedProcess[str]:
        """Run `gatekeeper ARGS...` to completion with this deployment's URL (and `token`, if given)."""
        env = self.env
        if token is not None:
            env["GATEKEEPER_TOKEN"] = token
        done = subprocess.run([sys.executable, "-m", "gatekeeper.cli", *args], env=env, cwd=self.dir,
                              capture_output=True, text=True, timeout=60, check=False, **options)
        if check and done.returncode != 0:
            raise AssertionError(f"gatekeeper {' '.join(args)} exited {done.returncode}:\n{done.stdout}{done.stderr}")
        return done
