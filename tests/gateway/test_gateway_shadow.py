"""Shadow through the gateway: the candidate's calls are decided in the mirror session and never run."""

from __future__ import annotations

import time

import mcp_types as types
from sqlmodel import Session, select

from gatekeeper.stage_evidence import shadow_signals
from gatekeeper.store.models import AgentSession, Rollout
from tests.support import scrape
from tests.support.gateway_world import Agent, World
from tests.support.mcp_gateway import connect, effects, run_async


def _pair(world: World, agent: Agent, key: str, *, stable: list[str], candidate: list[str]
          ) -> tuple[list[types.CallToolResult], list[types.Tool]]:
    """Serve one live session with stable, then run the candidate on the same session key."""

    async def main() -> tuple[list[types.CallToolResult], list[types.Tool]]:
        async with connect(world.gateway_url, agent.token, session_key=key) as session:
            for tool in stable:
                await session.call_tool(tool, {"agent": agent.name, "arm": "stable"})
        async with connect(world.gateway_url, agent.token, session_key=key, version="v2") as session:
            tools = (await session.list_tools()).tools
            results = [await session.call_tool(tool, {"agent": agent.name, "arm": "candidate"}) for tool in candidate]
        return results, tools

    return run_async(main)


def _ended(world: World, agent: Agent, count: int) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with Session(world.svc.db.engine) as db:
            rows = list(db.exec(select(AgentSession).where(AgentSession.rollout_id == agent.rollout_id)))
            if len(rows) == count and all(row.ended_at is not None for row in rows):
                return
        time.sleep(0.1)
    raise AssertionError("the gateway did not end the sessions when their MCP sessions closed")


def test_shadowed_calls_stay_off_the_upstream_and_feed_the_shadow_gate(world: World) -> None:
    agent = world.agent("shadow")
    agreeing, tools = _pair(world, agent, "pair-1", stable=["update_ticket", "send_email"],
                            candidate=["update_ticket", "send_email"])
    violating, _ = _pair(world, agent, "pair-2", stable=["update_ticket"], candidate=["refund_payment"])

    assert [r.is_error for r in agreeing + violating] == [False, False, False]
    assert all((r.meta or {})["gatekeeper"]["verdict"] == "shadow" for r in agreeing + violating)
    assert all("Recorded, not run" in r.content[0].text for r in agreeing)  # type: ignore[union-attr]
    arms = [e["arguments"]["arm"] for e in effects(world.live_effects) if e["arguments"].get("agent") == agent.name]
    assert arms == ["stable", "stable", "stable"]  # the candidate's side effects never happened
    marked = {tool.name: (tool.meta or {}).get("gatekeeper/never_allowed") for tool in tools}
    assert marked["search_kb"] is None and "shadowed in this stage" in (marked["send_email"] or "")
    assert "[gatekeeper: shadowed" in next(t.description or "" for t in tools if t.name == "send_email")

    _ended(world, agent, count=4)
    with Session(world.svc.db.engine) as db:
        rollout = db.get(Rollout, agent.rollout_id)
        assert rollout is not None
        signals = shadow_signals(rollout.id, since=rollout.tier_started_at, db=db)
    assert (signals.sessions, signals.pairs, signals.agreeing_pairs) == (2, 2, 1)
    assert (signals.calls, signals.violations) == (3, 1)

    samples = scrape.fetch(world.gateway_url.replace("/mcp", "/metrics"))
    assert scrape.value(samples, "gatekeeper_gateway_calls_total", agent=agent.name, environment="live",
                        verdict="shadow") == 3.0
    assert scrape.value(samples, "gatekeeper_decisions_total", agent=agent.name, arm="candidate", reason="shadow",
                        stage="shadow", verdict="shadow", version="v2") == 3.0
