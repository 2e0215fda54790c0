"""Every tools/call decided in the path: a real ClientSession through `gatekeeper gateway` to real upstreams."""

from __future__ import annotations

import time
from typing import Any

import anyio
import mcp_types as types
import requests
from sqlmodel import select

from gatekeeper import approvals
from gatekeeper.store.models import Agent as AgentModel
from gatekeeper.store.models import AgentSession
from gatekeeper.store.session_records import list_approvals
from tests.support.gateway_world import World
from tests.support.mcp_gateway import connect, connect_modern, effects, run_async


def _text(result: types.CallToolResult) -> str:
    return " ".join(block.text for block in result.content if isinstance(block, types.TextContent))


def _verdict(result: types.CallToolResult) -> dict[str, Any]:
    return dict((result.meta or {}).get("gatekeeper", {}))


def test_stable_calls_reach_the_live_upstream_and_bad_tokens_are_refused(world: World) -> None:
    agent = world.agent(None)
    before = len(effects(world.live_effects))

    async def main() -> types.CallToolResult:
        async with connect(world.gateway_url, agent.token) as session:
            return await session.call_tool("update_ticket", {"ticket": 7, "agent": agent.name})

    result = run_async(main)
    assert not result.is_error and _text(result) == "live:update_ticket done"
    assert effects(world.live_effects)[before:] == [{"label": "live", "tool": "update_ticket",
                                                     "arguments": {"ticket": 7, "agent": agent.name}}]
    refused = requests.post(world.gateway_url, json={}, headers={"Authorization": "Bearer gk_nope"}, timeout=5)
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "unauthorized"
    assert requests.post(world.gateway_url, json={}, timeout=5).status_code == 401


def test_canary_caps_and_sequence_rules_never_reach_the_upstream(world: World) -> None:
    agent = world.agent("canary")

    async def main() -> list[types.CallToolResult]:
        async with connect(world.gateway_url, agent.token, session_key=agent.key(candidate=True)) as session:
            return [await session.call_tool("refund_payment", {"order": 1, "agent": agent.name}),
                    *[await session.call_tool("search_kb", {"q": n, "agent": agent.name}) for n in range(4)]]

    refund, *searches = run_async(main)
    assert refund.is_error and _verdict(refund)["reason"] == "sequence_before"
    assert "refund_payment is not allowed until lookup_customer has run" in _text(refund)
    assert [_verdict(r).get("reason", "") for r in searches] == ["", "", "", "cap_tool_calls"]
    assert searches[3].is_error and "used its 3 tool calls" in _text(searches[3])
    reached = [e for e in effects(world.live_effects) if e["arguments"].get("agent") == agent.name]
    assert [(e["tool"], e["arguments"]["q"]) for e in reached] == [("search_kb", 0), ("search_kb", 1),
                                                                   ("search_kb", 2)]


def test_twin_sessions_reach_only_the_twin_upstream(world: World) -> None:
    agent = world.agent("twin")

    async def main() -> types.CallToolResult:
        async with connect(world.gateway_url, agent.token, environment="twin") as session:
            return await session.call_tool("update_ticket", {"agent": agent.name})

    result = run_async(main)
    assert not result.is_error and _text(result) == "twin:update_ticket done"
    assert [e["label"] for e in effects(world.twin_effects) if e["arguments"].get("agent") == agent.name] == ["twin"]
    assert not [e for e in effects(world.live_effects) if e["arguments"].get("agent") == agent.name]


def test_an_approval_without_elicitation_is_a_tool_error_and_the_approved_call_runs_once(world: World) -> None:
    agent = world.agent("canary")
    arguments = {"to": "ana@example.com", "agent": agent.name}

    async def main() -> list[types.CallToolResult]:
        async with connect(world.gateway_url, agent.token, session_key=agent.key(candidate=True)) as session:
            marks = {t.name: (t.meta or {}).get("gatekeeper/approval_required") for t in
                     (await session.list_tools()).tools}
            assert (marks["send_email"], marks["search_kb"]) == ("true", None)
            first = await session.call_tool("send_email", arguments)
            approval_id = _verdict(first)["approval_id"]
            await anyio.to_thread.run_sync(lambda: approvals.approve(world.svc, approval_id, actor="rm",
                                                                     reason="reads well", now=time.time()))
            again = await session.call_tool("send_email", arguments)
            third = await session.call_tool("send_email", arguments)
            return [first, again, third]

    first, again, third = run_async(main)
    assert first.is_error and _verdict(first)["verdict"] == "approval_required"
    assert _verdict(first)["approval_id"] in _text(first)
    assert not again.is_error and _text(again) == "live:send_email done"
    assert third.is_error and _verdict(third)["verdict"] == "approval_required"  # once: a new approval
    sent = [e for e in effects(world.live_effects) if e["arguments"].get("agent") == agent.name]
    assert len(sent) == 1


def _approving(world: World, agent: str, asked: list[str]) -> Any:
    """Return an elicitation handler that notes the question, approves the agent's pending approvals, accepts."""

    async def approve_then_accept(context: Any, params: types.ElicitRequestParams) -> types.ElicitResult:
        asked.append(params.message)
        with world.svc.db.reading() as db:
            pending = [a.id for a in list_approvals(state="pending", db=db) if agent in (a.arguments or "")]
        for approval_id in pending:
            await anyio.to_thread.run_sync(lambda a=approval_id: approvals.approve(
                world.svc, a, actor="rm", reason="ok", now=time.time()))
        return types.ElicitResult(action="accept", content={})

    return approve_then_accept


def test_elicitation_waits_for_the_approval_and_changed_arguments_need_a_new_one(world: World) -> None:
    agent = world.agent("canary")
    asked: list[str] = []

    approve_then_accept = _approving(world, agent.name, asked)

    async def decline(context: Any, params: types.ElicitRequestParams) -> types.ElicitResult:
        asked.append(params.message)
        return types.ElicitResult(action="decline")

    async def main() -> list[types.CallToolResult]:
        key = agent.key(candidate=True)
        async with connect(world.gateway_url, agent.token, session_key=key, elicitation=approve_then_accept) as s:
            sent = await s.call_tool("send_email", {"to": "ana@example.com", "agent": agent.name})
            changed = await s.call_tool("send_email", {"to": "bob@example.com", "agent": agent.name})
        other = agent.key(candidate=True, start=int(key[1:]) + 1)
        async with connect(world.gateway_url, agent.token, session_key=other, elicitation=decline) as s:
            declined = await s.call_tool("send_email", {"to": "eve@example.com", "agent": agent.name})
        return [sent, changed, declined]

    sent, changed, declined = run_async(main)
    assert not sent.is_error and not changed.is_error and len(asked) == 3
    assert "approval" in asked[0]
    recipients = [e["arguments"]["to"] for e in effects(world.live_effects)
                  if e["arguments"].get("agent") == agent.name]
    assert recipients == ["ana@example.com", "bob@example.com"]  # each set of arguments approved on its own
    assert declined.is_error and _verdict(declined)["verdict"] == "approval_required"


def test_a_2026_07_28_client_gets_its_approval_through_input_required(world: World) -> None:
    agent = world.agent("canary")
    asked: list[str] = []

    approve_then_accept = _approving(world, agent.name, asked)

    async def main() -> tuple[list[types.CallToolResult], str]:
        key = agent.key(candidate=True)
        async with connect_modern(world.gateway_url, agent.token, session_key=key,
                                  elicitation=approve_then_accept) as client:
            assert client.protocol_version == "2026-07-28"
            results = [await client.call_tool("search_kb", {"agent": agent.name}),
                       await client.call_tool("send_email", {"to": "ana@example.com", "agent": agent.name})]
        async with connect_modern(world.gateway_url, agent.token) as client:
            try:
                await client.call_tool("search_kb", {"agent": agent.name})
                refused = ""
            except Exception as exc:  # noqa: BLE001 - the SDK's MCPError
                refused = str(exc)
        return results, refused

    (searched, sent), refused = run_async(main)
    assert not searched.is_error and not sent.is_error and len(asked) == 1
    reached = [e["tool"] for e in effects(world.live_effects) if e["arguments"].get("agent") == agent.name]
    assert reached == ["search_kb", "send_email"]
    with world.svc.db.reading() as db:  # both calls were decided in one Gatekeeper session
        calls = [row.tool_calls for row in db.exec(select(AgentSession).join(AgentModel)
                                                   .where(AgentModel.name == agent.name))]
    assert calls == [2]
    assert "Gatekeeper-Session-Key" in refused


def test_bad_input_is_refused_with_the_field_and_reaches_nothing(world: World) -> None:
    agent = world.agent(None)

    async def refusal(environment: str | None, arguments: dict[str, Any]) -> str:
        try:
            async with connect(world.gateway_url, agent.token, environment=environment) as session:
                await session.call_tool("update_ticket", arguments)
        except Exception as exc:  # noqa: BLE001 - the SDK's MCPError, or a group holding it
            return repr(exc)
        return ""

    wrong_environment = run_async(refusal, "prod", {"agent": agent.name})
    too_big = run_async(refusal, None, {"agent": agent.name, "body": "x" * 20_000})
    assert "environment" in wrong_environment and "refused the session" in wrong_environment
    assert "arguments" in too_big and "refused the call" in too_big
    assert not [e for e in effects(world.live_effects) if e["arguments"].get("agent") == agent.name]


def test_an_expired_approval_asks_a_person_again_for_the_same_call(world: World) -> None:
    agent = world.agent("canary")
    arguments = {"to": "ana@example.com", "agent": agent.name}

    async def main() -> tuple[types.CallToolResult, types.CallToolResult]:
        async with connect(world.gateway_url, agent.token, session_key=agent.key(candidate=True)) as session:
            first = await session.call_tool("send_email", arguments)
            await anyio.sleep(5.2)  # the test policy's approvals.expire_after is 5s
            return first, await session.call_tool("send_email", arguments)

    first, again = run_async(main)
    assert _verdict(first)["verdict"] == _verdict(again)["verdict"] == "approval_required"
    assert _verdict(again)["approval_id"] != _verdict(first)["approval_id"]
    assert not [e for e in effects(world.live_effects) if e["arguments"].get("agent") == agent.name]
