"""Sessions through the lean path end: on DELETE, and when idle (2026-07-28 keys too, cancelling approvals);
an agent whose upstream is a command is served through the SDK path of the same HTTP gateway."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import mcp_types as types
import pytest
from sqlmodel import Session, select

from gatekeeper.store.models import Agent as AgentModel
from gatekeeper.store.models import AgentSession, Approval
from tests.support.gateway_world import Agent, World
from tests.support.mcp_gateway import REPO, McpProcesses, connect, connect_modern, effects, run_async


@pytest.fixture(scope="module")
def idle_gateway(world: World, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, list[Agent], Path]]:
    """A second gateway ending sessions idle for 1 s; its first agent's twin upstream is a command (stdio), its
    third's policy has a twin scenario."""
    workdir = tmp_path_factory.mktemp("idle-gateway")
    agents = [world.agent("canary"), world.agent(None), world.agent("twin", policy="gwtwin")]
    live = json.loads(world.gateway_file.read_text())["agents"][agents[0].name]["live"]
    twin_effects = workdir / "twin-stdio.jsonl"
    stdio = {"command": sys.executable, "args": ["-m", "tests.support.mcp_upstream", "--stdio", "--effects",
                                                 str(twin_effects), "--label", "twin-stdio"],
             "env": {"PYTHONPATH": str(REPO)}, "cwd": str(REPO)}
    config = workdir / "gateway.yaml"
    config.write_text(json.dumps({"timeout": "5s", "agents": {
        agents[0].name: {"live": live, "twin": stdio}, agents[1].name: {"live": live, "twin": live},
        agents[2].name: {"live": live, "twin": live}}}))
    with McpProcesses(workdir) as procs:
        yield procs.gateway(config, env=world.env, extra=["--idle-timeout", "1s"]), agents, twin_effects


def _sessions(world: World, agent: Agent) -> list[AgentSession]:
    with Session(world.svc.db.engine) as db:
        return list(db.exec(select(AgentSession).join(AgentModel).where(AgentModel.name == agent.name)))


def _wait_ended(world: World, agent: Agent, count: int) -> list[AgentSession]:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        rows = _sessions(world, agent)
        if len(rows) == count and all(row.ended_at is not None for row in rows):
            return rows
        time.sleep(0.1)
    raise AssertionError(f"sessions of {agent.name} not ended: {_sessions(world, agent)}")


def test_an_idle_2026_07_28_session_ends_and_its_pending_approval_is_cancelled(
        world: World, idle_gateway: tuple[str, list[Agent], Path]) -> None:
    url, (agent, _, _), _ = idle_gateway

    async def main() -> types.CallToolResult:
        async with connect_modern(url, agent.token, session_key=agent.key(candidate=True)) as client:
            return await client.call_tool("send_email", {"to": "ana@example.com", "agent": agent.name})

    asked = run_async(main)
    approval_id = (asked.meta or {})["gatekeeper"]["approval_id"]
    assert asked.is_error and approval_id in asked.content[0].text  # type: ignore[union-attr]
    (row,) = _wait_ended(world, agent, 1)
    with Session(world.svc.db.engine) as db:
        approval = db.get(Approval, approval_id)
        assert approval is not None and approval.state == "cancelled"
    assert not [e for e in effects(world.live_effects) if e["arguments"].get("agent") == agent.name]


def test_an_idle_mcp_session_ends_and_a_closed_one_ends_at_once(
        world: World, idle_gateway: tuple[str, list[Agent], Path]) -> None:
    url, (_, agent, _), _ = idle_gateway

    async def main() -> tuple[list[AgentSession], str, types.CallToolResult]:
        async with connect(url, agent.token) as session:
            await session.call_tool("search_kb", {"agent": agent.name})
            await anyio.sleep(2.5)  # idle past --idle-timeout 1s: the gateway ended it
            ended = await anyio.to_thread.run_sync(_sessions, world, agent)
            try:
                await session.call_tool("search_kb", {"agent": agent.name})
                after = ""
            except Exception as exc:  # noqa: BLE001 - the SDK's MCPError: the session is gone
                after = str(exc)
        async with connect(url, agent.token) as session:
            closed = await session.call_tool("search_kb", {"agent": agent.name, "n": 2})
        return ended, after, closed

    ended, after, closed = run_async(main)
    assert len(ended) == 1 and ended[0].ended_at is not None
    assert "Session not found" in after
    assert not closed.is_error
    _wait_ended(world, agent, 2)  # the second, closed by the client's DELETE


def test_a_command_upstream_is_served_through_the_sdk_path_of_the_http_gateway(
        world: World, idle_gateway: tuple[str, list[Agent], Path]) -> None:
    url, (agent, _, _), twin_effects = idle_gateway

    async def main() -> tuple[types.CallToolResult, str]:
        async with connect(url, agent.token, environment="twin") as session:
            result = await session.call_tool("update_ticket", {"agent": agent.name})
        async with connect(url, agent.token, environment="twin", twin={"Scenario": "nope"}) as session:
            try:  # the SDK path reads the twin headers too: the policy has no such scenario
                await session.call_tool("update_ticket", {"agent": agent.name})
                refused = ""
            except Exception as exc:  # noqa: BLE001 - the SDK's MCPError
                refused = str(exc)
        return result, refused

    result, refused = run_async(main)
    assert not result.is_error and result.content[0].text == "twin-stdio:update_ticket done"  # type: ignore[union-attr]
    assert [e["label"] for e in effects(twin_effects)] == ["twin-stdio"]
    assert refused.startswith("the gatekeeper refused the session: policy gw has no scenario 'nope'"), refused


def test_an_idle_2026_07_28_twin_scenario_run_ends_and_is_judged(
        world: World, idle_gateway: tuple[str, list[Agent], Path]) -> None:
    url, (_, _, agent), _ = idle_gateway

    async def main() -> list[types.CallToolResult]:
        async with connect_modern(url, agent.token, session_key="run-1", environment="twin",
                                  twin={"Scenario": "ticket"}) as client:
            return [await client.call_tool(tool, {"agent": agent.name}) for tool in ("search_kb", "update_ticket")]

    assert not any(result.is_error for result in run_async(main))
    (row,) = _wait_ended(world, agent, 1)  # no MCP session to close: the idle timeout ended it
    assert (row.scenario, row.arm, row.status, row.passed) == ("ticket", "candidate", "ok", True)  # judged
