"""Overhead of `gatekeeper gateway` on tools/call: direct, through the gateway, through FastMCP's proxy.

    python bench/gateway.py [--calls 200] [--rounds 3] [--idle 1000]

Starts a real upstream MCP server (streamable HTTP, `tests/support/mcp_upstream.py`, tool `echo`),
`gatekeeper gateway` in front of it on a throwaway SQLite database (a stable session, so every call
is decided `allow`, forwarded and its outcome reported), and FastMCP's `create_proxy` over one
shared, connected upstream client (the mainstream Python pass-through). Then, in alternating
rounds, 1 and 8 concurrent `ClientSession`s call `echo` through each path and it prints p50/p99,
calls/s, and the CPU time the serving process spent per call (direct: the upstream's own); finally
it opens `--idle` MCP sessions on each path (each makes one call, so through the gateway its
Gatekeeper session exists) and prints the serving process's resident memory growth per session.
Targets (issue 14): added p50 at 1 client ≤ 1.5 ms, CPU per call ≤ 1.5 ms, at least 2x below the
proxy; ≤ 100 KB per idle session.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

POLICY = """\
name: bench
agents: [bench-bot]
tools: {echo: read_only}
stages:
  canary: {tiers: [50], caps: {tool_calls_per_session: 100000, spend_per_session: 100}}
  expansion: {tiers: [100], caps: {tool_calls_per_session: 100000, spend_per_session: 100}}
stable_caps: {tool_calls_per_session: 100000, spend_per_session: 100}
"""


def _free_port() -> int:
    from tests.support.services import free_port

    return free_port()


def _spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                env={**os.environ, "PYTHONPATH": str(REPO), **env})


def _wait(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    import requests

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{url}: the process exited:\n{log.read_text()[-2000:]}")
        try:
            requests.get(url, timeout=1)
            return
        except requests.RequestException:
            time.sleep(0.2)
    raise SystemExit(f"{url} did not answer:\n{log.read_text()[-2000:]}")


def _setup_database(workdir: Path) -> tuple[dict[str, str], str]:
    from gatekeeper import rollouts
    from gatekeeper.config import Settings
    from gatekeeper.services import Services
    from gatekeeper.store.tokens import create_token

    policies = workdir / "policies"
    policies.mkdir()
    (policies / "bench.yaml").write_text(POLICY)
    env = {"GATEKEEPER_DATABASE_URL": f"sqlite:///{workdir / 'gatekeeper.db'}", "GATEKEEPER_POLICY_DIR": str(policies)}
    svc = Services.build(Settings(database_url=env["GATEKEEPER_DATABASE_URL"], policy_dir=policies))
    svc.db.upgrade()
    rollouts.register_agent(svc, "bench-bot", policy="bench", stable_version="v1", now=time.time())
    with svc.db.transaction() as db:
        token, _ = create_token("bench", role="agent", agent="bench-bot", now=time.time(), db=db)
    svc.db.dispose()
    return env, token


async def proxy_main(upstream: str, port: int) -> None:
    """Run FastMCP's create_proxy over one connected upstream client (one shared session)."""
    from fastmcp import Client
    from fastmcp.server import create_proxy

    async with Client(upstream) as client:
        proxy = create_proxy(client)
        await proxy.run_http_async(show_banner=False, host="127.0.0.1", port=port, log_level="warning")


async def _session(stack: AsyncExitStack, url: str, token: str | None) -> Any:
    import httpx2
    from mcp import ClientSession
    from mcp.client.streamable_http import streamable_http_client

    headers = {"Authorization": f"Bearer {token}"} if token else {}
    http = await stack.enter_async_context(httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30)))
    streams = await stack.enter_async_context(streamable_http_client(url, http_client=http))
    session = await stack.enter_async_context(ClientSession(streams[0], streams[1]))
    await session.initialize()
    await session.call_tool("echo", {"warm": True})
    return session


async def _round(url: str, token: str | None, *, clients: int, calls: int) -> tuple[list[float], float]:
    async with AsyncExitStack() as stack:
        sessions = [await _session(stack, url, token) for _ in range(clients)]
        latencies: list[float] = []

        async def worker(session: Any) -> None:
            for n in range(calls):
                started = time.perf_counter()
                result = await session.call_tool("echo", {"n": n, "text": "hello"})
                latencies.append(time.perf_counter() - started)
                assert not result.is_error, result

        started = time.perf_counter()
        await asyncio.gather(*(worker(s) for s in sessions))
        return latencies, time.perf_counter() - started


def _cpu(pid: int | None) -> tuple[float, float]:
    """Return the process's CPU seconds, and those of its main thread (the event loop)."""
    import psutil

    if pid is None:
        return 0.0, 0.0
    process = psutil.Process(pid)
    times = process.cpu_times()
    main = next((t.user_time + t.system_time for t in process.threads() if t.id == pid), 0.0)
    return times.user + times.system, main


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def measure(paths: dict[str, tuple[str, str | None, int | None]], *, rounds: int, calls: int
                  ) -> dict[tuple[str, int], list[dict[str, float]]]:
    """Alternate the paths round by round at 1 and 8 clients; return per-round figures."""
    found: dict[tuple[str, int], list[dict[str, float]]] = {}
    for clients in (1, 8):
        per_client = calls if clients == 1 else max(1, calls // 4)
        for _ in range(rounds):
            for name, (url, token, pid) in paths.items():
                before = _cpu(pid)
                latencies, seconds = await _round(url, token, clients=clients, calls=per_client)
                after = _cpu(pid)  # direct: the upstream's own CPU, the floor every path pays
                exchanges = (len(latencies) + clients * 2) / 1000
                found.setdefault((name, clients), []).append({
                    "p50": _quantile(latencies, 0.5) * 1000, "p99": _quantile(latencies, 0.99) * 1000,
                    "rate": len(latencies) / seconds, "cpu": (after[0] - before[0]) / exchanges,
                    "loop": (after[1] - before[1]) / exchanges})
    return found


async def idle_memory(url: str, token: str | None, pid: int, *, sessions: int) -> tuple[float, float]:
    """Open `sessions` MCP sessions on a path and keep them idle; return the process's RSS before and after (MB).

    Each session lives in a task of its own (its transport's scopes are left by the task that entered them),
    opened 20 at a time, and all are held open while the memory is read."""
    import anyio
    import psutil

    process = psutil.Process(pid)
    before = process.memory_info().rss / 1e6
    opening, opened, release = anyio.Semaphore(20), anyio.Semaphore(0, max_value=sessions), anyio.Event()

    async def hold() -> None:
        async with AsyncExitStack() as stack:
            async with opening:
                await _session(stack, url, token)
            opened.release()
            await release.wait()

    async with anyio.create_task_group() as tasks:
        for _ in range(sessions):
            tasks.start_soon(hold)
        for _ in range(sessions):
            await opened.acquire()
        await anyio.sleep(1)
        after = process.memory_info().rss / 1e6
        release.set()
    return before, after


def report(found: dict[tuple[str, int], list[dict[str, float]]]) -> None:
    """Print the medians (and the range over rounds) of every path and client count, and the target ratios."""
    print(f"{'path':<8} {'clients':>7} {'p50 ms (range)':>22} {'p99 ms':>8} {'calls/s':>8} "
          f"{'CPU/call ms (range)':>22} {'of it loop':>10}")
    medians: dict[tuple[str, int], dict[str, float]] = {}
    for (name, clients), rows in found.items():
        medians[(name, clients)] = m = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
        p50 = f"{m['p50']:.2f} ({min(r['p50'] for r in rows):.1f}-{max(r['p50'] for r in rows):.1f})"
        cpu = f"{m['cpu']:.2f} ({min(r['cpu'] for r in rows):.2f}-{max(r['cpu'] for r in rows):.2f})"
        print(f"{name:<8} {clients:>7} {p50:>22} {m['p99']:>8.2f} {m['rate']:>8.0f} {cpu:>22} {m['loop']:>10.2f}")
    for clients in (1, 8):
        direct, gateway, proxy = (medians[(n, clients)] for n in ("direct", "gateway", "proxy"))
        added_gw, added_px = gateway["p50"] - direct["p50"], proxy["p50"] - direct["p50"]
        print(f"{clients} client(s): added p50 gateway {added_gw:+.2f} ms, proxy {added_px:+.2f} ms "
              f"(proxy/gateway {added_px / added_gw if added_gw > 0 else float('inf'):.2f}x); CPU per call "
              f"gateway {gateway['cpu']:.2f} ms (event loop {gateway['loop']:.2f}, database threads "
              f"{gateway['cpu'] - gateway['loop']:.2f}), proxy {proxy['cpu']:.2f} ms "
              f"(proxy/gateway {proxy['cpu'] / gateway['cpu'] if gateway['cpu'] else float('inf'):.2f}x)")
    for clients in (1, 8):  # the added p50 of each round against the direct path of the same round
        added = [g["p50"] - d["p50"] for g, d in zip(found[("gateway", clients)], found[("direct", clients)],
                                                     strict=True)]
        print(f"{clients} client(s): added p50 per round, gateway: {', '.join(f'{a:+.2f}' for a in added)} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=200, help="calls per client per round at 1 client")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--idle", type=int, default=1000, help="idle MCP sessions for the memory figure")
    parser.add_argument("--proxy", nargs=2, metavar=("UPSTREAM", "PORT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.proxy:
        asyncio.run(proxy_main(args.proxy[0], int(args.proxy[1])))
        return
    with tempfile.TemporaryDirectory(prefix="gatekeeper-bench-gateway-") as folder:
        workdir = Path(folder)
        env, token = _setup_database(workdir)
        processes: list[subprocess.Popen[bytes]] = []
        try:
            up_port, gw_port, px_port = _free_port(), _free_port(), _free_port()
            upstream = f"http://127.0.0.1:{up_port}/mcp"
            processes.append(_spawn([sys.executable, "-m", "tests.support.mcp_upstream", "--effects",
                                     str(workdir / "effects.jsonl"), "--port", str(up_port)], {}, workdir / "up.log"))
            _wait(upstream, processes[-1], workdir / "up.log")
            config = workdir / "gateway.yaml"
            config.write_text(json.dumps({"agents": {"bench-bot": {"live": {"url": upstream},
                                                                  "twin": {"url": upstream}}}}))
            processes.append(_spawn([sys.executable, "-m", "gatekeeper.cli", "gateway", "--config", str(config),
                                     "--bind", f"127.0.0.1:{gw_port}"], env, workdir / "gw.log"))
            _wait(f"http://127.0.0.1:{gw_port}/healthz", processes[-1], workdir / "gw.log")
            gateway_pid = processes[-1].pid
            processes.append(_spawn([sys.executable, __file__, "--proxy", upstream, str(px_port)], {},
                                    workdir / "px.log"))
            _wait(f"http://127.0.0.1:{px_port}/mcp", processes[-1], workdir / "px.log")
            paths = {"direct": (upstream, None, processes[0].pid),
                     "gateway": (f"http://127.0.0.1:{gw_port}/mcp", token, gateway_pid),
                     "proxy": (f"http://127.0.0.1:{px_port}/mcp", None, processes[-1].pid)}
            report(asyncio.run(measure(paths, rounds=args.rounds, calls=args.calls)))
            sys.stdout.flush()
            for name, (url, auth, pid) in paths.items() if args.idle else ():
                assert pid is not None
                before, after = asyncio.run(idle_memory(url, auth, pid, sessions=args.idle))
                print(f"{args.idle} idle sessions {name}: RSS {before:.1f} MB -> {after:.1f} MB, "
                      f"{(after - before) * 1000 / args.idle:.1f} KB per session (gateway target <= 100 KB)",
                      flush=True)
        finally:
            for process in processes:
                process.terminate()
            for process in processes:
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    process.kill()


if __name__ == "__main__":
    main()
