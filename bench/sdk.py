"""The SDK's own overhead per guarded call, sync and async, beside the same HTTP requests sent raw.

Run: `python bench/sdk.py [--calls 2000] [--rounds 4] [--workers 1] [--threads 4]`.

A guarded call is two requests (the decision, then the outcome with latency and actual cost); the raw
baseline sends the same two requests with a bare httpx client (`Client` / `AsyncClient`, connections
kept alive), so the difference is what the SDK adds: building the arguments, the request id, the flow,
the session lookup in the context variable, parsing the answers. Two settings, alternated in rounds:

- in memory: an `httpx.MockTransport` answers at once, so the figures are the client's CPU alone;
- loopback: the real app under `gatekeeper serve` (gunicorn, gthread workers so connections are reused)
  on a temporary SQLite file with the repository's `support-default` policy; every call is an allow.

Target (issue 15): the SDK adds under 100 µs per guarded call in memory, and under 10 % over loopback.
A benchmark, not a test: it prints figures, never fails.
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
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "client")]

from gatekeeper_client import AsyncGatekeeper, Gatekeeper, guarded  # noqa: E402

PER_SESSION = 50  # stable caps allow 60 calls a session: every timed call is an allow
TARGET_MEMORY_US, TARGET_LOOPBACK = 100.0, 0.10


@guarded("search_kb", cost=0.001, read_only=True)
def search_kb(query: str) -> str:
    return query


@guarded("search_kb", cost=0.001, read_only=True)
async def search_kb_async(query: str) -> str:
    return query


def _canned(request: httpx.Request) -> httpx.Response:
    if request.url.path == "/v1/sessions":
        return httpx.Response(201, json={"session_id": "s" * 24, "agent": "support-bot", "version": "v1",
                                         "arm": "stable", "stage": None, "environment": "live",
                                         "caps": {"tool_calls": 60, "spend": 2.0}})
    if request.url.path == "/v1/decisions":
        return httpx.Response(200, json={"decision_id": "d" * 24, "verdict": "allow", "reason": "",
                                         "message": "The call may run.", "remaining": {"tool_calls": 59,
                                                                                         "spend": 1.99}})
    return httpx.Response(200, json={"status": "ok"})


def raw_sync(url: str, token: str, calls: int, transport: httpx.BaseTransport | None) -> list[float]:
    """Time the two requests of a guarded call, sent by hand."""
    samples: list[float] = []
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, transport=transport) as http:
        for n in range(calls):
            if n % PER_SESSION == 0:
                session = http.post("/v1/sessions", json={"agent": "support-bot"}).json()["session_id"]
            started = time.perf_counter()
            decision = http.post("/v1/decisions", json={"session_id": session, "tool": "search_kb", "cost": 0.001,
                                                        "arguments": {"query": "q"}, "request_id": f"r{n}"}).json()
            http.post(f"/v1/decisions/{decision['decision_id']}/outcome",
                      json={"status": "ok", "actual_cost": 0.001, "latency_ms": 0.01})
            samples.append(time.perf_counter() - started)
    return samples


def sdk_sync(url: str, token: str, calls: int, transport: httpx.BaseTransport | None) -> list[float]:
    """Time guarded calls through `Gatekeeper`."""
    samples: list[float] = []
    with Gatekeeper(url, token, transport=transport) as gk:
        for _ in range(calls // PER_SESSION):
            with gk.session("support-bot"):
                for _ in range(PER_SESSION):
                    started = time.perf_counter()
                    search_kb("q")
                    samples.append(time.perf_counter() - started)
    return samples


async def raw_async(url: str, token: str, calls: int, transport: httpx.AsyncBaseTransport | None) -> list[float]:
    samples: list[float] = []
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {token}"},
                                 transport=transport) as http:
        for n in range(calls):
            if n % PER_SESSION == 0:
                session = (await http.post("/v1/sessions", json={"agent": "support-bot"})).json()["session_id"]
            started = time.perf_counter()
            decision = (await http.post("/v1/decisions", json={
                "session_id": session, "tool": "search_kb", "cost": 0.001, "arguments": {"query": "q"},
                "request_id": f"r{n}"})).json()
            await http.post(f"/v1/decisions/{decision['decision_id']}/outcome",
                            json={"status": "ok", "actual_cost": 0.001, "latency_ms": 0.01})
            samples.append(time.perf_counter() - started)
    return samples


async def sdk_async(url: str, token: str, calls: int, transport: httpx.AsyncBaseTransport | None) -> list[float]:
    samples: list[float] = []
    async with AsyncGatekeeper(url, token, transport=transport) as gk:
        for _ in range(calls // PER_SESSION):
            async with gk.session("support-bot"):
                for _ in range(PER_SESSION):
                    started = time.perf_counter()
                    await search_kb_async("q")
                    samples.append(time.perf_counter() - started)
    return samples


def _serve(folder: Path, *, workers: int, threads: int) -> tuple[subprocess.Popen[bytes], str, str]:
    """Register support-bot on a fresh database, make its token, start `gatekeeper serve`."""
    from gatekeeper import create_app, rollouts
    from gatekeeper.store.tokens import create_token

    url_db = f"sqlite:///{folder / 'bench.db'}"
    app = create_app({"database_url": url_db, "policy_dir": REPO / "policies"})
    svc = app.extensions["gatekeeper"]
    svc.db.upgrade()
    rollouts.register_agent(svc, "support-bot", policy="support-default", stable_version="v1", now=time.time())
    with svc.db.transaction() as db:
        token, _ = create_token("bench", role="agent", agent="support-bot", now=time.time(), db=db)
    svc.db.dispose()
    port = 18000 + os.getpid() % 1000
    env = {**os.environ, "GATEKEEPER_DATABASE_URL": url_db, "GATEKEEPER_POLICY_DIR": str(REPO / "policies"),
           "GATEKEEPER_SECRET_KEY": "bench", "PYTHONPATH": str(REPO)}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    process = subprocess.Popen([sys.executable, "-m", "gatekeeper.cli", "serve", "--bind", f"127.0.0.1:{port}",
                                "--workers", str(workers), "--threads", str(threads), "--metrics-dir",
                                str(folder / "metrics")], env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return process, url, token
        except httpx.HTTPError:
            time.sleep(0.2)
    process.terminate()
    raise SystemExit("gatekeeper serve did not start")


def _us(samples: list[float]) -> str:
    ordered = sorted(samples)
    return f"median {statistics.median(ordered) * 1e6:7.1f} µs  p99 {ordered[int(len(ordered) * 0.99)] * 1e6:7.1f} µs"


def _round(name: str, kinds: dict[str, Callable[[], list[float]]], found: dict[str, list[float]]) -> None:
    for kind, run in kinds.items():
        found.setdefault(f"{name} {kind}", []).extend(run())


def main() -> None:
    """Print per-call medians of raw and SDK calls, in memory and over loopback, and the SDK's overhead."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--threads", type=int, default=4)
    args = parser.parse_args()
    calls = max(PER_SESSION, args.calls // args.rounds // PER_SESSION * PER_SESSION)
    memory, amemory = httpx.MockTransport(_canned), httpx.MockTransport(_canned)
    found: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as folder:
        process, url, token = _serve(Path(folder), workers=args.workers, threads=args.threads)
        try:
            for _ in range(args.rounds):
                _round("memory", {
                    "raw sync": lambda: raw_sync("http://sdk.test", "t", calls, memory),
                    "sdk sync": lambda: sdk_sync("http://sdk.test", "t", calls, memory),
                    "raw async": lambda: asyncio.run(_awaited(raw_async("http://sdk.test", "t", calls, amemory))),
                    "sdk async": lambda: asyncio.run(_awaited(sdk_async("http://sdk.test", "t", calls, amemory)))},
                    found)
                _round("loopback", {
                    "raw sync": lambda: raw_sync(url, token, calls, None),
                    "sdk sync": lambda: sdk_sync(url, token, calls, None),
                    "raw async": lambda: asyncio.run(_awaited(raw_async(url, token, calls, None))),
                    "sdk async": lambda: asyncio.run(_awaited(sdk_async(url, token, calls, None)))}, found)
        finally:
            process.terminate()
            process.wait(timeout=15)
    for kind, samples in found.items():
        print(f"{kind:<20} {len(samples):6d} calls  {_us(samples)}")
    report = {}
    for where in ("memory", "loopback"):
        for flavour in ("sync", "async"):
            raw, sdk = (statistics.median(found[f"{where} {k} {flavour}"]) for k in ("raw", "sdk"))
            report[f"{where} {flavour}"] = {"overhead_us": round((sdk - raw) * 1e6, 1), "ratio": round(sdk / raw, 3)}
    print(json.dumps(report, indent=1))
    for flavour in ("sync", "async"):
        memory_us = report[f"memory {flavour}"]["overhead_us"]
        loopback = report[f"loopback {flavour}"]["ratio"] - 1
        print(f"{flavour}: SDK overhead {memory_us:.1f} µs in memory (target < {TARGET_MEMORY_US:.0f}: "
              f"{'met' if memory_us < TARGET_MEMORY_US else 'NOT met'}), {loopback:+.1%} over loopback "
              f"(target < {TARGET_LOOPBACK:.0%}: {'met' if loopback < TARGET_LOOPBACK else 'NOT met'})")


async def _awaited(work: Awaitable[list[float]]) -> list[float]:
    return await work


if __name__ == "__main__":
    main()
