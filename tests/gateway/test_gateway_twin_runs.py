"""Twin scenario runs opened through the gateway: `Gatekeeper-Scenario`, `Gatekeeper-Arm: stable` and
`Gatekeeper-Twin-Snapshot-At` (GATEKEEPER_SCENARIO, GATEKEEPER_ARM, GATEKEEPER_TWIN_SNAPSHOT_AT on stdio)
open the same twin session `POST /v1/sessions` would; the run's trajectory is judged when its MCP session
ends (graceful handling of rehearsed failures included); bad input is an error the MCP client sees, and
opens nothing.
"""

from __future__ import annotations

import sys
import time
from datetime import UTC, datetime

import mcp_types as types
import pytest
from mcp import ClientSession, StdioServerParameters, stdio_client
from mcp.shared.exceptions import MCPError
from sqlmodel import Session, select

from gatekeeper.store.models import Agent as AgentModel
from gatekeeper.store.models import AgentSession
from tests.support.gateway_world import Agent, World
from tests.support.mcp_gateway import REPO, connect, connect_modern, effects, run_async

SNAPSHOT = "2026-11-30T12:00:00+00:00"


def _sessions(world: World, agent: Agent, *, ended: int | None = None) -> list[AgentSession]:
    """Return the agent's sessions, oldest first; with `ended`, wait until that many have ended."""
    deadline = time.monotonic() + 10
    while True:
        with Session(world.svc.db.engine) as db:
            rows = list(db.exec(select(AgentSession).join(AgentModel).where(AgentModel.name == agent.name)
                                .order_by(AgentSession.started_at)))  # type: ignore[arg-type]
        if ended is None or sum(row.ended_at is not None for row in rows) >= ended or time.monotonic() > deadline:
            return rows
        time.sleep(0.05)


def _run(world: World, agent: Agent, tools: list[str], **twin: str) -> list[types.CallToolResult]:
    async def main() -> list[types.CallToolResult]:
        async with connect(world.gateway_url, agent.token, environment="twin", twin=twin) as session:
            return [await session.call_tool(tool, {"agent": agent.name}) for tool in tools]

    return run_async(main)


def test_twin_scenario_runs_through_the_gateway_are_judged_when_their_mcp_session_ends(world: World) -> None:
    agent = world.agent("twin", policy="gwtwin")
    good = _run(world, agent, ["search_kb", "update_ticket"], Scenario="ticket", **{"Twin-Snapshot-At": SNAPSHOT})
    bad = _run(world, agent, ["update_ticket", "send_email"], Scenario="ticket", Arm="stable")
    assert not any(result.is_error for result in good + bad)
    first, second = _sessions(world, agent, ended=2)
    # The candidate's run: judged against the scenario's trajectory (no harness verdict) as it closed.
    assert (first.scenario, first.arm, first.version, first.environment) == ("ticket", "candidate", "v2", "twin")
    assert first.status == "ok" and first.passed is True
    assert first.twin_snapshot_at == datetime.fromisoformat(SNAPSHOT).astimezone(UTC).timestamp()
    # The stable version's run in the twin (a replay): it called a forbidden tool, so it failed its scenario.
    assert (second.scenario, second.arm, second.version) == ("ticket", "stable", "v1")
    assert second.passed is False and second.twin_snapshot_at is None
    assert {e["label"] for e in effects(world.twin_effects) if e["arguments"].get("agent") == agent.name} == {"twin"}
    assert not [e for e in effects(world.live_effects) if e["arguments"].get("agent") == agent.name]


def test_an_agent_that_retries_an_email_after_a_rehearsed_timeout_fails_its_scenario_one_that_stops_passes(
        world: World) -> None:
    agent = world.agent("twin", policy="gwtwin")  # chaos: every irreversible call of a twin run times out

    def notify(*, retry: bool) -> list[bool]:
        async def main() -> list[bool]:
            async with connect(world.gateway_url, agent.token, environment="twin", twin={"Scenario": "notify"}) \
                    as session:
                timed_out = []
                for _ in range(2 if retry else 1):
                    result = await session.call_tool("send_email", {"agent": agent.name, "to": "ana@example.com"})
                    said = " ".join(b.text for b in result.content if isinstance(b, types.TextContent))
                    timed_out.append(result.is_error is True and "timed out" in said)
                return timed_out

        return run_async(main)

    assert notify(retry=False) == [True]
    assert notify(retry=True) == [True, True]
    careful, blind = _sessions(world, agent, ended=2)
    assert (careful.passed, blind.passed) == (True, False)  # no_blind_retry, judged as the MCP session closed
    # A rehearsed timeout forwards the call: the email went out once, then twice more for the blind retry.
    assert [e["tool"] for e in effects(world.twin_effects) if e["arguments"].get("agent") == agent.name] == [
        "send_email"] * 3


@pytest.mark.parametrize("asked, message", [
    ({"Environment": "twin", "Scenario": "nope"}, "policy gwtwin has no scenario 'nope' (known: notify, ticket)"),
    ({"Scenario": "ticket"}, "a scenario runs against the twin: send environment=twin"),
    ({"Arm": "stable"}, "only a twin session may choose its arm: send environment=twin"),
    ({"Environment": "twin", "Arm": "canary"}, "arm: Input should be 'candidate' or 'stable'"),
    ({"Environment": "twin", "Twin-Snapshot-At": "yesterday"}, "twin_snapshot_at: Input should be a valid datetime"),
])
def test_bad_twin_fields_are_refused_on_both_protocols_and_open_nothing(
        world: World, asked: dict[str, str], message: str) -> None:
    agent = world.agent("twin", policy="gwtwin")

    async def main() -> list[str]:
        said = []
        async with connect(world.gateway_url, agent.token, twin=asked) as session:
            with pytest.raises(MCPError) as refused:
                await session.call_tool("update_ticket", {"agent": agent.name})
            said.append(str(refused.value))
        async with connect_modern(world.gateway_url, agent.token, session_key="k1", twin=asked) as client:
            with pytest.raises(MCPError) as refused:
                await client.call_tool("update_ticket", {"agent": agent.name})
            said.append(str(refused.value))
        return said

    for said in run_async(main):
        assert said.startswith(f"the gatekeeper refused the session: {message}"), said
    assert _sessions(world, agent) == []
    assert not [e for e in effects(world.twin_effects) + effects(world.live_effects)
                if e["arguments"].get("agent") == agent.name]


def test_a_stable_twin_run_on_stdio_and_on_2026_07_28_takes_its_scenario_and_arm(world: World) -> None:
    agent = world.agent("twin", policy="gwtwin")
    env = {**world.env, "PYTHONPATH": str(REPO), "GATEKEEPER_AGENT_TOKEN": agent.token,
           "GATEKEEPER_ENVIRONMENT": "twin", "GATEKEEPER_SCENARIO": "ticket", "GATEKEEPER_ARM": "stable",
           "GATEKEEPER_TWIN_SNAPSHOT_AT": SNAPSHOT}
    params = StdioServerParameters(command=sys.executable, env=env, cwd=str(REPO), args=[
        "-m", "gatekeeper.cli", "gateway", "--stdio", "--config", str(world.gateway_file)])

    async def main() -> list[types.CallToolResult]:
        async with stdio_client(params) as streams, ClientSession(streams[0], streams[1]) as session:
            await session.initialize()
            stdio = await session.call_tool("update_ticket", {"agent": agent.name, "via": "stdio"})
        # 2026-07-28: the scenario and arm belong to the key's identity, as the seed does.
        async with connect_modern(world.gateway_url, agent.token, session_key="k-modern", environment="twin",
                                  twin={"Scenario": "ticket", "Arm": "stable"}) as client:
            modern = [await client.call_tool("update_ticket", {"agent": agent.name, "via": "modern"}),
                      await client.call_tool("search_kb", {"agent": agent.name, "via": "modern"})]
        async with connect_modern(world.gateway_url, agent.token, session_key="k-modern", environment="twin",
                                  twin={"Scenario": "ticket"}) as client:  # the same key, the candidate: another
            modern.append(await client.call_tool("update_ticket", {"agent": agent.name, "via": "modern"}))
        return [stdio, *modern]

    assert not any(result.is_error for result in run_async(main))
    stdio, stable, candidate = _sessions(world, agent, ended=1)
    assert (stdio.scenario, stdio.arm, stdio.version, stdio.passed) == ("ticket", "stable", "v1", True)
    assert stdio.ended_at is not None and stdio.twin_snapshot_at is not None
    assert (stable.scenario, stable.arm, stable.tool_calls, stable.ended_at) == ("ticket", "stable", 2, None)
    assert (candidate.scenario, candidate.arm, candidate.tool_calls) == ("ticket", "candidate", 1)
