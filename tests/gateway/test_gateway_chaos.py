"""The twin's rehearsed failures applied by the gateway, on both paths, repeatable per seed.

A real ClientSession calls `update_ticket` of a real twin upstream (its side effects go to a file) through
`gatekeeper gateway` in a candidate's twin session with `Gatekeeper-Seed` (HTTP, the lean path, on the
2025-11-25 protocol and on 2026-07-28 where the session key names the session) or `GATEKEEPER_SEED`
(stdio, the SDK path). Each call's failure is what core/chaos.py draws for the seed and
the call's place in the session: `error` never reaches the upstream, `timeout` does (the effect is there,
the agent hears a timeout), `partial` and `malformed` damage the upstream's answer.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import mcp_types as types
import pytest
from mcp import ClientSession, StdioServerParameters, stdio_client
from mcp.shared.exceptions import MCPError
from sqlalchemy import text

from gatekeeper.core import chaos
from tests.support import scrape
from tests.support.gateway_world import World
from tests.support.mcp_gateway import REPO, connect, connect_modern, effects, run_async

CALLS = 24
DONE = "update_ticket done"  # the upstream's answer after its label ("twin:" or "twin-stdio:")


def _seen(result: types.CallToolResult, label: str) -> str:
    """Return what the agent met: ok, error, timeout, partial or malformed (else the text itself)."""
    said = " ".join(block.text for block in result.content if isinstance(block, types.TextContent))
    full = f"{label}:{DONE}"
    if result.is_error:
        return "timeout" if "timed out" in said else "error" if "failed" in said else said
    if said == full:
        return "ok"
    if said.endswith(chaos.GARBLE_MARK + '{"'):
        return "malformed"
    return "partial" if said and full.startswith(said) else said


def _http_run(world: World, token: str, seed: str, run: str) -> list[str]:
    async def main() -> list[types.CallToolResult]:
        async with connect(world.gateway_url, token, environment="twin", seed=seed) as session:
            return [await session.call_tool("update_ticket", {"run": run, "n": n}) for n in range(CALLS)]

    return [_seen(result, "twin") for result in run_async(main)]


def _modern_run(world: World, token: str, seed: str, run: str) -> list[str]:
    """The 2026-07-28 protocol: no MCP session, the session key names the Gatekeeper session (the lean path)."""
    async def main() -> list[types.CallToolResult]:
        async with connect_modern(world.gateway_url, token, session_key=f"chaos-{run}", environment="twin",
                                  seed=seed) as client:
            return [await client.call_tool("update_ticket", {"run": run, "n": n}) for n in range(CALLS)]

    return [_seen(result, "twin") for result in run_async(main)]


def _stdio_run(world: World, agent: str, token: str, seed: str, workdir: Path) -> tuple[list[str], Path]:
    """Launch `gatekeeper gateway --stdio` (the SDK path) in front of a stdio twin upstream, as a local agent."""
    twin_effects, config = workdir / "twin-stdio.jsonl", workdir / "gateway.yaml"
    twin = {"command": sys.executable, "args": ["-m", "tests.support.mcp_upstream", "--stdio", "--effects",
                                                str(twin_effects), "--label", "twin-stdio"],
            "env": {"PYTHONPATH": str(REPO)}, "cwd": str(REPO)}
    live = json.loads(world.gateway_file.read_text())["agents"][agent]["live"]
    config.write_text(json.dumps({"timeout": "5s", "agents": {agent: {"live": live, "twin": twin}}}))
    env = {**world.env, "PYTHONPATH": str(REPO), "GATEKEEPER_AGENT_TOKEN": token, "GATEKEEPER_ENVIRONMENT": "twin",
           "GATEKEEPER_SEED": seed}
    params = StdioServerParameters(command=sys.executable, args=["-m", "gatekeeper.cli", "gateway", "--stdio",
                                                                 "--config", str(config)], env=env, cwd=str(REPO))

    async def main() -> list[types.CallToolResult]:
        async with stdio_client(params) as streams, ClientSession(streams[0], streams[1]) as session:
            await session.initialize()
            return [await session.call_tool("update_ticket", {"run": "stdio", "n": n}) for n in range(CALLS)]

    return [_seen(result, "twin-stdio") for result in run_async(main)], twin_effects


def _reached(path: Path, run: str) -> list[int]:
    """Return the calls of one run that reached the upstream (its side-effect file), in order."""
    return [e["arguments"]["n"] for e in effects(path) if e["arguments"].get("run") == run]


def _outcomes(world: World, agent: str, seed: str) -> list[list[tuple[str | None, float | None]]]:
    """Return each session's (outcome, latency) per call for one seed, waiting until every outcome is written."""
    sql = text("SELECT d.session_id, d.outcome_status, d.latency_ms FROM decisions d JOIN sessions s"
               " ON s.id = d.session_id JOIN agents a ON a.id = s.agent_id"
               " WHERE a.name = :agent AND s.seed = :seed ORDER BY s.started_at, d.id")
    deadline = time.monotonic() + 10
    while True:
        with world.svc.db.reading() as db:
            rows = db.execute(sql, {"agent": agent, "seed": seed}).all()
        if all(row[1] is not None for row in rows) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    found: dict[str, list[tuple[str | None, float | None]]] = {}
    for session_id, status, latency in rows:
        found.setdefault(session_id, []).append((status, latency))
    return list(found.values())


def test_the_same_seed_injects_the_same_failures_through_the_gateway_on_both_paths_and_protocols(
        world: World, tmp_path: Path) -> None:
    agent = world.agent("twin", policy="gwchaos")
    settings = world.svc.policies.get("gwchaos").policy.twin.chaos["update_ticket"]
    drawn = [chaos.inject(settings, seed="seed-a", tool="update_ticket", index=n + 1) for n in range(CALLS)]
    expected = [injection.fault or "ok" for injection in drawn]

    first = _http_run(world, agent.token, "seed-a", "a1")
    again = _http_run(world, agent.token, "seed-a", "a2")
    other = _http_run(world, agent.token, "seed-b", "b1")
    modern = _modern_run(world, agent.token, "seed-a", "m1")
    stdio, stdio_effects = _stdio_run(world, agent.name, agent.token, "seed-a", tmp_path)

    # The same seed meets the same failures, call by call, on two runs, through both paths and on both protocol
    # generations (up to 2025-11-25 with an MCP session, 2026-07-28 without); another seed differs.
    assert first == expected and again == expected and modern == expected and stdio == expected
    assert other != first
    assert {"ok", "error", "timeout", "partial", "malformed"} <= set(first), first
    # An injected error never reaches the tool; a timeout does (the effect happened, the agent heard a timeout).
    ran = [n for n, kind in enumerate(expected) if kind != "error"]
    assert _reached(world.twin_effects, "a1") == ran and _reached(world.twin_effects, "a2") == ran
    assert _reached(world.twin_effects, "m1") == ran and _reached(stdio_effects, "stdio") == ran
    assert not [e for e in effects(world.live_effects) if e["arguments"].get("run") in ("a1", "a2", "m1", "stdio")]
    # The HTTP gateway counted every failure it rehearsed (its four runs; stdio is another process) by class and fault.
    drawn_b = [chaos.inject(settings, seed="seed-b", tool="update_ticket", index=n + 1) for n in range(CALLS)]
    runs = [*drawn, *drawn, *drawn, *drawn_b]  # a1, a2, m1 and b1
    samples = scrape.fetch(world.gateway_url.removesuffix("/mcp") + "/metrics")
    for fault in ("error", "timeout", "partial", "malformed"):
        assert scrape.value(samples, "gatekeeper_gateway_rehearsed_faults_total", agent=agent.name,
                            tool_class="reversible", fault=fault) == sum(i.fault == fault for i in runs), fault
    assert scrape.value(samples, "gatekeeper_gateway_rehearsed_faults_total", agent=agent.name,
                        tool_class="reversible", fault="latency") == sum(i.delay_ms > 0 for i in runs)
    # Reported outcomes: errors and timeouts are errors, damaged results ok; the latency includes the delay.
    sessions = _outcomes(world, agent.name, "seed-a")
    assert len(sessions) == 4
    for calls in sessions:
        assert [status for status, _ in calls] == ["error" if kind in ("error", "timeout") else "ok"
                                                   for kind in expected]
        delayed = [latency for (_, latency), injection in zip(calls, drawn, strict=True) if injection.delay_ms]
        assert delayed and all(latency is not None and latency >= 30 for latency in delayed)


def test_a_seed_outside_a_twin_session_is_refused(world: World) -> None:
    agent = world.agent("twin", policy="gwchaos")

    async def main() -> None:
        async with connect(world.gateway_url, agent.token, seed="seed-a") as session:
            with pytest.raises(MCPError, match="a seed drives the twin's rehearsed failures"):
                await session.call_tool("update_ticket", {"run": "live-seed"})

    run_async(main)
    assert not [e for e in effects(world.live_effects) if e["arguments"].get("run") == "live-seed"]
