"""`gatekeeper demo` in a subprocess: a candidate completes, a spike trips the kill switch, an approval waits.

The test watches the demo's database until all three have happened, then stops the demo the
way a person does, with Ctrl-C (SIGINT), and checks it stopped everything and said where the
database is. SIGTERM, as `kill` or `timeout` send it, must stop it the same way.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy
from sqlalchemy.pool import NullPool

from gatekeeper.demo.run import _require_free_port
from tests.support.services import free_port

DEADLINE_S = 240.0


def facts(db: Path) -> dict[str, object]:
    """Read what the demo did from its database."""
    if not db.exists():
        return {}
    engine = sqlalchemy.create_engine(f"sqlite:///{db}", poolclass=NullPool)
    try:
        with engine.connect() as connection:
            rows = connection.exec_driver_sql(
                "SELECT a.name, a.stable_version, r.state, r.stage FROM agents a "
                "JOIN rollouts r ON r.agent_id = a.id").all()
            killers = connection.exec_driver_sql(
                "SELECT a.name FROM transitions t JOIN agents a ON a.id = t.agent_id "
                "WHERE t.action = 'kill' AND t.actor = 'kill_switch'").all()
            waiting = connection.exec_driver_sql(
                "SELECT a.name FROM approvals p JOIN agents a ON a.id = p.agent_id "
                "JOIN sessions s ON s.id = p.session_id WHERE p.state = 'pending' AND s.environment = 'live'").all()
    except sqlalchemy.exc.OperationalError:
        return {}  # the schema is not there yet
    finally:
        engine.dispose()
    return {"rollouts": {name: (stable, state, stage) for name, stable, state, stage in rows},
            "killed_by_kill_switch": {name for (name,) in killers}, "approvals_waiting": {n for (n,) in waiting}}


def settled(found: dict[str, object]) -> bool:
    rollouts = found.get("rollouts") or {}
    return (rollouts.get("support-bot", (None, None, None))[1] == "completed"  # type: ignore[union-attr]
            and "code-assistant" in found.get("killed_by_kill_switch", set())  # type: ignore[operator]
            and "billing-agent" in found.get("approvals_waiting", set()))  # type: ignore[operator]


def port_closed(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) != 0


class DemoRun:
    """A `gatekeeper demo` subprocess and what it printed, read as it prints it."""

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        self.process = process
        self.output = ""
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in iter(self.process.stdout.readline, b""):
            self.output += line.decode()

    def stop(self, signum: int) -> str:
        """Send `signum` as a person or a supervisor would; return everything the demo printed."""
        self.process.send_signal(signum)
        self.process.wait(timeout=60)
        self.reader.join(timeout=10)
        return self.output


@contextlib.contextmanager
def running_demo(tmp_path: Path, db: Path, port: int, *, duration: float) -> Iterator[DemoRun]:
    """Start the demo; whatever happens, leave neither it nor its server running."""
    command = [sys.executable, "-m", "gatekeeper.cli", "demo", "--db", str(db), "--port", str(port),
               "--duration", str(int(duration)), "--password", "demo-password"]
    run = DemoRun(subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=tmp_path,
                                   start_new_session=True))
    try:
        yield run
    finally:
        if run.process.poll() is None:
            os.killpg(run.process.pid, signal.SIGKILL)
            run.process.wait(timeout=10)
            run.reader.join(timeout=10)
        # A failed demo may leave its server, which runs in its own session, out of the demo's group.
        found = re.search(r"^server: gunicorn .* \(pid (\d+)\)$", run.output, re.MULTILINE)
        if found is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(int(found.group(1)), signal.SIGKILL)


def test_demo_walks_a_rollout_trips_the_kill_switch_and_waits_on_an_approval(tmp_path: Path) -> None:
    db, port = tmp_path / "demo.db", free_port()
    found: dict[str, object] = {}
    waited: set[str] = set()  # agents seen with a live call waiting for a person, at any poll
    with running_demo(tmp_path, db, port, duration=DEADLINE_S + 60) as demo:
        deadline = time.monotonic() + DEADLINE_S
        # A pending approval is cancelled once its rollout leaves the stage (SPEC §5), so billing's wait is
        # seen while it lasts rather than at the moment support-bot completes.
        while time.monotonic() < deadline and demo.process.poll() is None and not settled(found):
            time.sleep(2)
            found = facts(db)
            waited |= found.get("approvals_waiting", set())  # type: ignore[arg-type]
            found["approvals_waiting"] = waited
        assert settled(found), found
        output = demo.stop(signal.SIGINT)
    assert demo.process.returncode == 0, output[-3000:]
    assert f"dashboard: http://127.0.0.1:{port}/   sign in as admin / demo-password" in output
    assert "scaled for the demo" in output
    assert "support-bot" in output and "-> expansion 100% (completed) by scheduler" in output
    assert "code-assistant  kill" in output and "by kill_switch: kill switch: candidate error rate" in output
    assert "billing-agent: issue_refund waits for a person" in output
    assert "Ctrl-C: stopping" in output and "stopping the server" in output
    assert f"database: {db}" in output
    assert port_closed(port), "the demo left its server running"
    assert found["rollouts"]["support-bot"][0] == "v2"  # type: ignore[index]


def test_sigterm_stops_the_demo_and_its_server_like_ctrl_c(tmp_path: Path) -> None:
    db, port = tmp_path / "demo.db", free_port()
    with running_demo(tmp_path, db, port, duration=600) as demo:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and demo.process.poll() is None and not facts(db).get("rollouts"):
            time.sleep(1)  # the fleet has started once the rollouts exist
        assert facts(db).get("rollouts"), "the demo did not start its rollouts"
        assert not port_closed(port)
        # The README's CLI works against the demo with the line it prints.
        exports = re.search(r"^export (GATEKEEPER_URL=\S+) (GATEKEEPER_TOKEN=\S+)$", demo.output, re.MULTILINE)
        assert exports is not None, demo.output
        env = {**os.environ, **dict(pair.split("=", 1) for pair in exports.groups())}
        assert env["GATEKEEPER_URL"] == f"http://127.0.0.1:{port}"
        listed = subprocess.run([sys.executable, "-m", "gatekeeper.cli", "agent", "list", "--json"], env=env,
                                capture_output=True, text=True, timeout=60, check=False)
        assert listed.returncode == 0, listed.stderr
        assert {a["name"] for a in json.loads(listed.stdout)} == {"support-bot", "code-assistant", "billing-agent"}
        output = demo.stop(signal.SIGTERM)  # as `kill`, `timeout` or a container stop do
        assert port_closed(port), "the demo left its server running"
    assert demo.process.returncode == 0, output[-3000:]
    assert "SIGTERM: stopping" in output and "stopping the server" in output
    assert f"database: {db}" in output


def test_a_port_left_in_time_wait_by_an_earlier_run_is_free_and_a_listening_one_is_not() -> None:
    port = free_port()
    with socket.socket() as server:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", port))
        server.listen()
        with socket.create_connection(("127.0.0.1", port)) as client:
            accepted, _ = server.accept()
            accepted.close()  # the server side closes first, so its end waits in TIME_WAIT
            client.recv(1)
    _require_free_port(port)  # does not raise
    with socket.socket() as listening:
        listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listening.bind(("127.0.0.1", port))
        listening.listen()
        with pytest.raises(SystemExit, match=f"port {port} is in use"):
            _require_free_port(port)
