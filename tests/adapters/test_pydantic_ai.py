"""The Pydantic AI adapter, driven by Pydantic AI's own FunctionModel against the real app."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from gatekeeper_client import AsyncGatekeeper
from gatekeeper_client.adapters.pydantic_ai import GatekeeperCapability, GatekeeperToolset, Terms
from pydantic_ai import Agent, DeferredToolRequests
from pydantic_ai.messages import ModelMessage, ModelResponse, TextPart, ToolCallPart, ToolReturnPart
from pydantic_ai.models.function import AgentInfo, FunctionModel
from pydantic_ai.toolsets import FunctionToolset

from tests.support.adapters import AGENT, DENIED_MESSAGE, REJECTED_MESSAGE, SHADOW_MESSAGE, Desk, ReleaseManager

TERMS = {"search_kb": Terms(0.002, read_only=True), "refund_payment": 0.05, "send_email": 0.01,
         "update_ticket": 0.01}


def _toolset(ran: list[str]) -> FunctionToolset[Any]:
    toolset: FunctionToolset[Any] = FunctionToolset()

    @toolset.tool_plain
    def search_kb(query: str) -> str:
        """Search the knowledge base."""
        ran.append(f"search_kb:{query}")
        return "Refunds take 5 days."

    @toolset.tool_plain
    def refund_payment(order: str) -> str:
        """Refund an order."""
        ran.append(f"refund_payment:{order}")
        return "refunded"

    @toolset.tool_plain
    def send_email(to: str) -> str:
        """Email a customer."""
        ran.append(f"send_email:{to}")
        return "sent"

    @toolset.tool_plain
    def update_ticket(ticket: str) -> str:
        """Update a ticket."""
        ran.append(f"update_ticket:{ticket}")
        return "updated"

    return toolset


class Script:
    """A FunctionModel script: one tool call per turn, then a final answer; records what each call returned."""

    def __init__(self, calls: list[tuple[str, dict[str, Any], str]]) -> None:
        self.calls = calls
        self.told: dict[str, Any] = {}

    def __call__(self, messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        for message in messages:
            for part in getattr(message, "parts", []):
                if isinstance(part, ToolReturnPart):
                    self.told[part.tool_call_id] = part.content
        turn = sum(1 for message in messages if isinstance(message, ModelResponse))
        if turn < len(self.calls):
            tool, args, call_id = self.calls[turn]
            return ModelResponse(parts=[ToolCallPart(tool, args, tool_call_id=call_id)])
        return ModelResponse(parts=[TextPart("Done.")])


def _client(desk: Desk) -> AsyncGatekeeper:
    return AsyncGatekeeper(desk.url, desk.token, timeout=5, approval_poll=0.05)


def test_allowed_denied_and_approved_mid_run(desk: Desk, release_manager: ReleaseManager) -> None:
    desk.at("canary")
    ran: list[str] = []
    script = Script([("search_kb", {"query": "refund policy"}, "c1"), ("refund_payment", {"order": "1234"}, "c2"),
                     ("send_email", {"to": "ana@example.com"}, "c3")])
    agent = Agent(FunctionModel(script), toolsets=[_toolset(ran)], capabilities=[GatekeeperCapability(TERMS)],
                  output_type=[str, DeferredToolRequests])

    async def conversation() -> Any:
        async with _client(desk) as gk, gk.session(AGENT, session_key=desk.candidate_key()) as session:
            assert session.arm == "candidate"
            return (await agent.run("Refund order 1234 and tell Ana")).output

    assert asyncio.run(conversation()) == "Done."  # the approval was waited for inline: the run went on
    assert ran == ["search_kb:refund policy", "send_email:ana@example.com"]
    assert script.told == {"c1": "Refunds take 5 days.", "c2": DENIED_MESSAGE, "c3": "sent"}
    assert [a["arguments"] for a in release_manager.seen] == [{"to": "ana@example.com"}]
    rows = [(r["tool"], r["verdict"], r["reason"], r["outcome_status"]) for r in desk.decisions()]
    assert rows == [("search_kb", "allow", "", "ok"), ("refund_payment", "deny", "sequence_before", None),
                    ("send_email", "approval_required", "approval_required", None),
                    ("send_email", "allow", "", "ok")]


def test_toolset_pauses_for_approval_between_runs(desk: Desk) -> None:
    desk.at("canary")
    ran: list[str] = []
    script = Script([("send_email", {"to": "ana@example.com"}, "c1")])
    toolset = GatekeeperToolset(_toolset(ran), TERMS)
    agent = Agent(FunctionModel(script), toolsets=[toolset], output_type=[str, DeferredToolRequests])

    async def conversation() -> tuple[Any, Any]:
        async with _client(desk) as gk, gk.session(AGENT, session_key=desk.candidate_key()):
            first = await agent.run("Tell Ana")
            assert isinstance(first.output, DeferredToolRequests) and ran == []
            approval_id = first.output.metadata["c1"]["gatekeeper_approval_id"]
            desk.ok(desk.client.post(f"/v1/approvals/{approval_id}/approve", json={"reason": "ok"}, headers=desk.rm))
            results = await toolset.resolve(first.output)
            second = await agent.run(message_history=first.all_messages(), deferred_tool_results=results)
            return first.output, second.output

    _, final = asyncio.run(conversation())
    assert final == "Done." and ran == ["send_email:ana@example.com"] and script.told == {"c1": "sent"}
    assert [(r["tool"], r["verdict"], r["outcome_status"]) for r in desk.decisions()] == [
        ("send_email", "approval_required", None), ("send_email", "allow", "ok")]


def test_shadowed_tool_does_not_run(desk: Desk) -> None:
    desk.at("shadow")
    ran: list[str] = []
    script = Script([("search_kb", {"query": "refund policy"}, "s1"), ("update_ticket", {"ticket": "T-9"}, "s2")])
    agent = Agent(FunctionModel(script), toolsets=[_toolset(ran)], capabilities=[GatekeeperCapability(TERMS)])

    async def candidate_in_shadow() -> Any:
        async with _client(desk) as gk, gk.session(AGENT, session_key="conversation-1") as live:
            mirror = live.mirror_session()
            assert live.arm == "stable" and mirror is not None
            async with mirror.bound():
                return (await agent.run("Close ticket T-9")).output

    assert asyncio.run(candidate_in_shadow()) == "Done."
    assert ran == ["search_kb:refund policy"]
    assert script.told == {"s1": "Refunds take 5 days.", "s2": SHADOW_MESSAGE}
    assert [(r["tool"], r["verdict"]) for r in desk.decisions()] == [("search_kb", "allow"),
                                                                       ("update_ticket", "shadow")]


def test_a_tool_that_raises_is_reported_as_an_error(desk: Desk) -> None:
    desk.at("canary")
    script = Script([("search_kb", {"query": "refunds"}, "e1")])
    agent = Agent(FunctionModel(script), capabilities=[GatekeeperCapability(TERMS)])

    @agent.tool_plain
    def search_kb(query: str) -> str:
        raise TimeoutError("the knowledge base timed out")

    async def conversation() -> Any:
        async with _client(desk) as gk, gk.session(AGENT, session_key=desk.candidate_key()):
            return await agent.run("How long?")

    with pytest.raises(TimeoutError):  # Pydantic AI lets a tool's exception end the run; the guard reports it
        asyncio.run(conversation())
    assert [(r["tool"], r["verdict"], r["outcome_status"]) for r in desk.decisions()] == [
        ("search_kb", "allow", "error")]


def test_rejected_mid_run_does_not_run(desk: Desk, strict_release_manager: ReleaseManager) -> None:
    desk.at("canary")
    ran: list[str] = []
    script = Script([("send_email", {"to": "ana@example.com"}, "r1")])
    agent = Agent(FunctionModel(script), toolsets=[_toolset(ran)], capabilities=[GatekeeperCapability(TERMS)],
                  output_type=[str, DeferredToolRequests])

    async def conversation() -> Any:
        async with _client(desk) as gk, gk.session(AGENT, session_key=desk.candidate_key()):
            return (await agent.run("Tell Ana")).output

    assert asyncio.run(conversation()) == "Done."
    assert ran == [] and len(strict_release_manager.seen) == 1
    assert script.told == {"r1": REJECTED_MESSAGE}
