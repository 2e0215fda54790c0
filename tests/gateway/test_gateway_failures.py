"""Upstream failures through the gateway: errors trip the kill switch, a slow upstream never hangs the agent."""

from __future__ import annotations

import time

import mcp_types as types
from sqlmodel import Session

from gatekeeper.store.models import Rollout
from tests.support import scrape
from tests.support.gateway_world import World
from tests.support.mcp_gateway import connect, effects, run_async


def _reason(result: types.CallToolResult) -> str:
    return str((result.meta or {}).get("gatekeeper", {}).get("reason", ""))


def test_upstream_errors_trip_the_kill_switch_then_candidate_calls_are_refused_and_stable_calls_flow(
        world: World) -> None:
    agent = world.agent("canary")
    first, second = agent.key(candidate=True), agent.key(candidate=True, start=int(agent.key(candidate=True)[1:]) + 1)

    async def main() -> tuple[list[types.CallToolResult], types.CallToolResult, types.CallToolResult]:
        failed = []
        async with connect(world.gateway_url, agent.token, session_key=first) as session:
            failed += [await session.call_tool("fail_tool", {"agent": agent.name}) for _ in range(2)]
        async with connect(world.gateway_url, agent.token, session_key=second) as session:
            failed += [await session.call_tool("fail_tool", {"agent": agent.name}) for _ in range(2)]
            refused = await session.call_tool("search_kb", {"agent": agent.name, "arm": "candidate"})
        async with connect(world.gateway_url, agent.token, session_key=agent.key(candidate=False)) as session:
            stable = await session.call_tool("search_kb", {"agent": agent.name, "arm": "stable"})
        return failed, refused, stable

    failed, refused, stable = run_async(main)
    assert all(r.is_error for r in failed) and [_reason(r) for r in failed] == ["", "", "", ""]
    with Session(world.svc.db.engine) as db:
        rollout = db.get(Rollout, agent.rollout_id)
        assert rollout is not None and (rollout.state, rollout.stage) == ("killed", "shadow")
    assert refused.is_error and _reason(refused) == "kill_switch"
    assert not stable.is_error
    searched = [e["arguments"]["arm"] for e in effects(world.live_effects)
                if e["arguments"].get("agent") == agent.name and e["tool"] == "search_kb"]
    assert searched == ["stable"]
    samples = scrape.fetch(world.gateway_url.replace("/mcp", "/metrics"))
    assert scrape.value(samples, "gatekeeper_gateway_upstream_errors_total", kind="tool_error",
                        upstream=f"{agent.name}/live") == 4.0


def test_a_slow_upstream_is_a_tool_error_within_the_timeout(world: World) -> None:
    agent = world.agent(None)

    async def main() -> tuple[types.CallToolResult, types.CallToolResult, float]:
        async with connect(world.gateway_url, agent.token) as session:
            started = time.monotonic()
            slow = await session.call_tool("slow_tool", {"seconds": 5, "agent": agent.name})
            took = time.monotonic() - started
            after = await session.call_tool("search_kb", {"agent": agent.name})
        return slow, after, took

    slow, after, took = run_async(main)
    assert slow.is_error and "did not answer within 1s" in slow.content[0].text  # type: ignore[union-attr]
    assert took < 3 and not after.is_error  # the shared upstream session still serves the next call
