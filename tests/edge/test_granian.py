"""`gatekeeper serve --server granian` keeps what `serve` promises under gunicorn (issue 17 item 6).

Its options, the extra it needs, gunicorn's pre-app limits in front of the app, and one real server:
2 granian workers whose metrics add up on every scrape, a scheduler beside them, a graceful stop on
SIGTERM that finishes the request in flight and takes workers and scheduler down with it. The
hostile-input battery runs under granian too (tests/edge/test_hostile_input.py).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import click
import pytest
import requests
from click.testing import CliRunner

from gatekeeper.cli.serve import granian_command, serve
from gatekeeper.wsgi import HEADER_LINE_MAX, REQUEST_LINE_MAX, granian_edge
from tests.support.processes import wait_ready
from tests.support.scrape import parse, total
from tests.support.servers import POLICIES, prepare_database, server_env
from tests.support.services import free_port
from tests.support.test_services import wait_for

AGENT = "support-bot"
serve_module = sys.modules["gatekeeper.cli.serve"]  # `gatekeeper.cli.serve` the attribute is the command


def _options(command: list[str]) -> dict[str, str]:
    return {flag: value for flag, value in zip(command, command[1:], strict=False) if flag.startswith("--")}


def test_the_granian_command_carries_serves_options() -> None:
    command = granian_command(bind="0.0.0.0:8000", workers=4, threads=2, timeout=30)
    assert command[:4] == [sys.executable, "-m", "granian", "gatekeeper.wsgi:granian_app"]
    options = _options(command)
    assert (options["--host"], options["--port"], options["--workers"], options["--blocking-threads"]) == (
        "0.0.0.0", "8000", "4", "2")
    assert (options["--interface"], options["--http"], options["--http1-header-read-timeout"]) == ("wsgi", "1", "30000")
    assert "--respawn-failed-workers" in command  # a worker that dies comes back, as under gunicorn
    assert _options(granian_command(bind="[::1]:9000", workers=1, threads=1, timeout=600))[
        "--http1-header-read-timeout"] == "60000"  # granian's largest
    assert _options(granian_command(bind="[::1]:9000", workers=1, threads=1, timeout=5))["--host"] == "::1"
    assert _options(granian_command(bind="unix:/run/gk.sock", workers=1, threads=1, timeout=5))["--uds"] == (
        "/run/gk.sock")
    with pytest.raises(click.BadParameter):
        granian_command(bind="8000", workers=1, threads=1, timeout=5)


@pytest.mark.parametrize(("args", "env", "server"), [
    ([], {}, "gunicorn"), (["--server", "granian"], {}, "granian"), ([], {"GATEKEEPER_SERVER": "granian"}, "granian"),
    (["--server", "gunicorn"], {"GATEKEEPER_SERVER": "granian"}, "gunicorn"),
])
def test_serve_runs_the_server_its_option_or_gatekeeper_server_names(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, args: list[str], env: dict[str, str], server: str) -> None:
    started: list[list[str]] = []

    def execve(path: str, command: list[str], environ: dict[str, str]) -> None:
        started.append(command)
        assert environ["PROMETHEUS_MULTIPROC_DIR"] == str(tmp_path / "metrics")

    monkeypatch.setattr(serve_module.os, "execve", execve)
    done = CliRunner().invoke(serve, ["--no-upgrade", "--metrics-dir", str(tmp_path / "metrics"), *args],
                              env={"GATEKEEPER_DATABASE_URL": f"sqlite:///{tmp_path / 'gk.db'}", **env})
    assert done.exit_code == 0, done.output
    assert started and started[0][2] == server


def test_serve_names_the_extra_when_granian_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(serve_module, "granian_installed", lambda: False)
    done = CliRunner().invoke(serve, ["--server", "granian"])
    assert done.exit_code == 1
    assert "pip install 'gatekeeper[granian]'" in done.output


def _answer(environ: dict[str, Any]) -> tuple[str, dict[str, str], Any]:
    seen: dict[str, Any] = {}

    def app(env: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        seen.update(env)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    status: list[Any] = []
    body = b"".join(granian_edge(app)({"REQUEST_METHOD": "GET", "PATH_INFO": "/", "QUERY_STRING": "", **environ},
                                      lambda s, headers: status.extend([s, dict(headers)])))
    return status[0], status[1], json.loads(body) if status[0][:3] != "200" else seen


@pytest.mark.parametrize(("environ", "status", "code"), [
    ({"QUERY_STRING": "a" * (REQUEST_LINE_MAX - 12)}, "414", "uri_too_long"),
    ({"PATH_INFO": "/" + "é" * REQUEST_LINE_MAX}, "414", "uri_too_long"),
    ({"HTTP_X_PADDING": "a" * HEADER_LINE_MAX}, "431", "request_header_fields_too_large"),
    ({"REQUEST_METHOD": "get"}, "400", "bad_request"),
])
def test_the_granian_edge_refuses_what_gunicorn_refuses_with_the_json_error_body(
        environ: dict[str, Any], status: str, code: str) -> None:
    answered, headers, body = _answer(environ)
    assert answered.startswith(status) and headers["Content-Type"] == "application/json"
    assert body["error"]["code"] == code and body["error"]["message"]


def test_the_granian_edge_lets_requests_within_the_limits_through() -> None:
    assert _answer({"QUERY_STRING": "a" * (REQUEST_LINE_MAX - 20), "HTTP_X_PADDING": "a" * (HEADER_LINE_MAX - 20),
                    "REQUEST_METHOD": "POST"})[0] == "200 OK"


def test_the_granian_edge_drops_the_servers_environment_not_the_requests_headers(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.internal:3128")
    monkeypatch.setenv("CONTENT_LENGTH", "5")
    leaked = {"HTTP_PROXY": "http://proxy.internal:3128", "CONTENT_LENGTH": "5"}  # as granian copies them in
    seen = _answer(leaked)[2]
    assert "HTTP_PROXY" not in seen and "CONTENT_LENGTH" not in seen
    assert _answer({**leaked, "HTTP_PROXY": "sent-by-the-client"})[2]["HTTP_PROXY"] == "sent-by-the-client"


# -- one real server ----------------------------------------------------------------------------------


def _children(pid: int) -> set[int]:
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if int(fields[1]) == pid:
            found.add(int(stat.parent.name))
    return found



def _start_sessions(url: str, token: str, count: int) -> int:
    def one(_: int) -> int:
        answer = requests.post(f"{url}/v1/sessions", json={"agent": AGENT}, timeout=10,
                               headers={"Authorization": f"Bearer {token}", "Connection": "close"})
        assert answer.status_code == 201, answer.text
        return 1

    with ThreadPoolExecutor(8) as pool:
        return sum(pool.map(one, range(count)))


def test_granian_workers_share_metrics_and_stop_gracefully_with_their_scheduler(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'gk.db'}"
    tokens = prepare_database(url, tokens=["release_manager"])
    rm = {"Authorization": f"Bearer {tokens['release_manager']}"}
    port, metrics = free_port(), tmp_path / "metrics"
    metrics.mkdir()
    (metrics / "counter_999999.db").write_bytes(b"stale")  # a previous server's file: removed at start
    command = [sys.executable, "-m", "gatekeeper.cli", "serve", "--server", "granian", "--bind", f"127.0.0.1:{port}",
               "--workers", "2", "--metrics-dir", str(metrics), "--with-scheduler", "--scheduler-interval", "1s"]
    log = tmp_path / "serve.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(command, env=server_env(url, POLICIES), stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(f"{base}/readyz", process, log)
        assert not (metrics / "counter_999999.db").exists()
        assert requests.post(f"{base}/v1/agents", json={"name": AGENT, "policy": "support-default",
                                                        "stable_version": "v1"}, headers=rm, timeout=10).ok
        agent = requests.post(f"{base}/v1/tokens", json={"name": "bot", "role": "agent", "agent": AGENT},
                              headers=rm, timeout=10).json()["token"]
        sent = _start_sessions(base, agent, 24)
        counted = lambda: {p.name.rsplit("_", 1)[1] for p in metrics.glob("counter_*.db")}  # noqa: E731
        while len(counted()) < 2 and sent < 240:  # the kernel spreads connections; both workers serve soon
            sent += _start_sessions(base, agent, 24)
        assert len(counted()) == 2, counted()
        for _ in range(4):  # whichever worker answers the scrape, it reports every worker's counts
            samples = parse(requests.get(f"{base}/metrics", timeout=10).text)
            assert total(samples, "gatekeeper_sessions_total", agent=AGENT) == sent

        view = wait_for(lambda: (v := requests.get(f"{base}/v1/scheduler", headers=rm, timeout=5).json())[
            "healthy"] and v, timeout=20, what="the scheduler to lead")
        scheduler_pid = int(view["leader"].split(":")[1])
        granian_pid = next(iter(_children(process.pid) - {scheduler_pid}))
        assert scheduler_pid in _children(process.pid) and len(_children(granian_pid)) >= 2
        workers = _children(granian_pid)

        # A request in flight when SIGTERM arrives is finished; then everything stops.
        body = json.dumps({"agent": AGENT}).encode()
        with socket.create_connection(("127.0.0.1", port), timeout=20) as held:
            held.sendall(f"POST /v1/sessions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {agent}\r\n"
                         f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode())
            time.sleep(0.5)
            process.send_signal(signal.SIGTERM)
            time.sleep(0.5)
            held.sendall(body)
            assert held.recv(65536).startswith(b"HTTP/1.1 201")
        assert process.wait(timeout=20) == 0
        assert not [pid for pid in (scheduler_pid, granian_pid, *workers) if os.path.exists(f"/proc/{pid}")]
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=5)
