"""A local agent that launches `gatekeeper gateway --stdio` gets the same decisions as over HTTP."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import mcp_types as types
from mcp import ClientSession, StdioServerParameters, stdio_client

from tests.support.gateway_world import World
from tests.support.mcp_gateway import REPO, effects, run_async


def _gateway_file(world: World, path: Path, agent: str, twin_effects: Path) -> Path:
    twin = {"command": sys.executable, "args": ["-m", "tests.support.mcp_upstream", "--stdio", "--effects",
                                                str(twin_effects), "--label", "twin-stdio"],
            "env": {"PYTHONPATH": str(REPO)}, "cwd": str(REPO)}
    live = json.loads(world.gateway_file.read_text())["agents"][agent]["live"]
    path.write_text(json.dumps({"timeout": "5s", "agents": {agent: {"live": live, "twin": twin}}}))
    return path


async def _calls(world: World, config: Path, token: str, calls: list[tuple[str, dict[str, object]]], *,
                 session_key: str = "", environment: str = "live") -> list[types.CallToolResult]:
    env = {**world.env, "PYTHONPATH": str(REPO), "GATEKEEPER_AGENT_TOKEN": token,
           "GATEKEEPER_SESSION_KEY": session_key, "GATEKEEPER_ENVIRONMENT": environment}
    params = StdioServerParameters(command=sys.executable, args=["-m", "gatekeeper.cli", "gateway", "--stdio",
                                                                 "--config", str(config)], env=env, cwd=str(REPO))
    async with stdio_client(params) as streams, ClientSession(streams[0], streams[1]) as session:
        await session.initialize()
        return [await session.call_tool(tool, arguments) for tool, arguments in calls]


def test_a_stdio_client_gets_the_same_allow_and_deny(world: World, tmp_path: Path) -> None:
    agent = world.agent("canary")
    twin_effects = tmp_path / "twin-stdio.jsonl"
    config = _gateway_file(world, tmp_path / "gateway.yaml", agent.name, twin_effects)
    live = run_async(lambda: _calls(world, config, agent.token, [
        ("refund_payment", {"agent": agent.name}), ("search_kb", {"agent": agent.name})],
        session_key=agent.key(candidate=True)))
    twin = run_async(lambda: _calls(world, config, agent.token, [("update_ticket", {"agent": agent.name})],
                                    environment="twin"))

    denied, allowed = live
    assert denied.is_error and (denied.meta or {})["gatekeeper"]["reason"] == "sequence_before"
    assert not allowed.is_error and allowed.content[0].text == "live:search_kb done"  # type: ignore[union-attr]
    assert [e["tool"] for e in effects(world.live_effects) if e["arguments"].get("agent") == agent.name] == \
        ["search_kb"]
    assert not twin[0].is_error and [e["label"] for e in effects(twin_effects)] == ["twin-stdio"]
