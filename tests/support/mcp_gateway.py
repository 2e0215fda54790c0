"""Real MCP processes for the gateway's tests and bench: upstream servers, the gateway, and clients.

    with McpProcesses(tmp_path) as procs:
        live = procs.upstream("live")                      # URL of a real upstream MCP server
        url = procs.gateway(gateway_file, env=env)         # `gatekeeper gateway` on a free port: .../mcp

Every process is started in its own session and stopped (SIGTERM, then SIGKILL) when the block ends.
`connect(url, token, ...)` is an async context manager yielding an initialized `ClientSession`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any, Self, TypeVar

import anyio
import httpx2
from mcp import Client, ClientSession
from mcp.client.streamable_http import streamable_http_client

from tests.support.processes import stop_group, wait_ready
from tests.support.services import _Managed, free_port

REPO = Path(__file__).resolve().parents[2]
T = TypeVar("T")


class McpProcesses(_Managed):
    """Upstream MCP servers and gateways started for a test module, all stopped at the end."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.processes: list[subprocess.Popen[bytes]] = []

    def start(self) -> Self:
        return self

    def stop(self) -> None:
        for process in reversed(self.processes):
            stop_group(process)

    def _spawn(self, args: list[str], *, log: Path, env: Mapping[str, str] | None = None) -> subprocess.Popen[bytes]:
        environ = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
        with log.open("ab") as out:
            process = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=environ, cwd=self.workdir,
                                       start_new_session=True)
        self.processes.append(process)
        return process

    def upstream(self, label: str, *, drift: Path | None = None) -> tuple[str, Path]:
        """Start an upstream MCP server over streamable HTTP; return its URL and its side-effect file
        (`drift`: a flag file that, while it exists, makes its refund_payment answer differently)."""
        port, effects = free_port(), self.workdir / f"effects-{label}.jsonl"
        effects.touch()
        log = self.workdir / f"upstream-{label}.log"
        process = self._spawn([sys.executable, "-m", "tests.support.mcp_upstream", "--effects", str(effects),
                               "--label", label, "--port", str(port), *(["--drift", str(drift)] if drift else [])],
                              log=log)
        wait_ready_post(f"http://127.0.0.1:{port}/mcp", process, log)
        return f"http://127.0.0.1:{port}/mcp", effects

    def gateway(self, config: Path, *, env: Mapping[str, str], extra: list[str] | None = None) -> str:
        """Start `gatekeeper gateway` over streamable HTTP; return its MCP URL once /healthz answers."""
        port = free_port()
        log = self.workdir / f"gateway-{port}.log"
        process = self._spawn([sys.executable, "-m", "gatekeeper.cli", "gateway", "--config", str(config),
                               "--bind", f"127.0.0.1:{port}", *(extra or [])], log=log, env=env)
        wait_ready(f"http://127.0.0.1:{port}/healthz", process, log)
        return f"http://127.0.0.1:{port}/mcp"


def wait_ready_post(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    """Wait until an MCP endpoint answers at all (a GET without a session is refused, but answered)."""
    import time

    import requests

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"the upstream exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            requests.get(url, timeout=1)
            return
        except requests.RequestException:
            time.sleep(0.1)
    raise AssertionError(f"{url} did not answer:\n{log.read_text()[-3000:]}")


def write_gateway_file(path: Path, agents: Mapping[str, tuple[str, str]], *, timeout: str = "1s") -> Path:
    """Write a gateway file: each agent's live and twin upstream URLs."""
    document = {"timeout": timeout,
                "agents": {agent: {"live": {"url": live}, "twin": {"url": twin}} for agent, (live, twin) in
                           agents.items()}}
    path.write_text(json.dumps(document))  # JSON is YAML
    return path


@asynccontextmanager
async def connect(url: str, token: str | None, *, session_key: str | None = None, environment: str | None = None,
                  version: str | None = None, seed: str | None = None, elicitation: Any = None,
                  twin: Mapping[str, str] | None = None) -> AsyncIterator[ClientSession]:
    """Open an MCP session through the gateway as an agent would, with the SDK's own client (`twin`: more
    Gatekeeper-* headers by their suffix, e.g. {"Scenario": "refund", "Arm": "stable"})."""
    headers = gatekeeper_headers(token, session_key=session_key, environment=environment, version=version,
                                 seed=seed, twin=twin)
    async with AsyncExitStack() as stack:
        http = await stack.enter_async_context(httpx2.AsyncClient(headers=headers,
                                                                  timeout=httpx2.Timeout(10, read=60)))
        streams = await stack.enter_async_context(streamable_http_client(url, http_client=http))
        session = await stack.enter_async_context(ClientSession(streams[0], streams[1],
                                                                elicitation_callback=elicitation))
        await session.initialize()
        yield session


def gatekeeper_headers(token: str | None, *, session_key: str | None = None, environment: str | None = None,
                       version: str | None = None, seed: str | None = None, twin: Mapping[str, str] | None = None
                       ) -> dict[str, str]:
    """Return the headers an agent sends the gateway: its token and the Gatekeeper session it asks for."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    asked = {"Session-Key": session_key, "Environment": environment, "Version": version, "Seed": seed, **(twin or {})}
    headers.update({f"Gatekeeper-{name}": value for name, value in asked.items() if value is not None})
    return headers


@asynccontextmanager
async def connect_modern(url: str, token: str, *, session_key: str | None = None, elicitation: Any = None,
                         environment: str | None = None, seed: str | None = None,
                         twin: Mapping[str, str] | None = None) -> AsyncIterator[Client]:
    """Open a 2026-07-28 client (no MCP session: every request is its own exchange) through the gateway."""
    headers = gatekeeper_headers(token, session_key=session_key, environment=environment, seed=seed, twin=twin)
    async with httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(10, read=60)) as http:
        transport = streamable_http_client(url, http_client=http)
        async with Client(transport, mode="2026-07-28", elicitation_callback=elicitation) as client:
            yield client


def run_async(function: Callable[..., Awaitable[T]], *args: Any) -> T:
    """Run an async function to completion in a thread of its own, so that an event loop another test left
    running in this thread (Playwright's sync API keeps one for the whole run) cannot get in the way."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["result"] = anyio.run(function, *args)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            box["error"] = exc

    thread = threading.Thread(target=target, name="mcp-test-client")
    thread.start()
    thread.join(timeout=120)
    if thread.is_alive():
        raise AssertionError("the MCP client did not finish within 120 s")
    if "error" in box:
        raise box["error"]
    return box["result"]  # type: ignore[no-any-return]


def effects(path: Path) -> list[dict[str, Any]]:
    """Return the side effects an upstream wrote, in order."""
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
