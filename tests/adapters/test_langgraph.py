"""The LangGraph adapter: a graph whose model is langchain_core's GenericFakeChatModel, against the real app."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from gatekeeper_client import AsyncGatekeeper, Gatekeeper
from gatekeeper_client.adapters.langgraph import GuardedToolNode, LangGraphGuard, Terms
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langchain_core.tools import BaseTool, tool
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import START, MessagesState, StateGraph
from langgraph.prebuilt import tools_condition
from langgraph.types import Command

from tests.support.adapters import AGENT, DENIED_MESSAGE, SHADOW_MESSAGE, Desk, ReleaseManager

TERMS = {"search_kb": Terms(0.002, read_only=True), "refund_payment": 0.05, "send_email": 0.01,
         "update_ticket": 0.01}


class ToolCallingFake(GenericFakeChatModel):
    """GenericFakeChatModel bound to tools: it answers its scripted messages whatever tools it is given."""

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> Any:
        return self


def _tools(ran: list[str]) -> list[BaseTool]:
    @tool
    def search_kb(query: str) -> str:
        """Search the knowledge base."""
        ran.append(f"search_kb:{query}")
        return "Refunds take 5 days."

    @tool
    def refund_payment(order: str) -> str:
        """Refund an order."""
        ran.append(f"refund_payment:{order}")
        return "refunded"

    @tool
    def send_email(to: str) -> str:
        """Email a customer."""
        ran.append(f"send_email:{to}")
        return "sent"

    @tool
    def update_ticket(ticket: str) -> str:
        """Update a ticket."""
        ran.append(f"update_ticket:{ticket}")
        return "updated"

    return [search_kb, refund_payment, send_email, update_ticket]


def _graph(calls: list[tuple[str, dict[str, Any], str]], tools: list[BaseTool], guard: LangGraphGuard,
           **options: Any) -> Any:
    """Compile agent -> guarded tools -> agent, the model scripted to make `calls` one per turn, then answer."""
    script = [AIMessage("", tool_calls=[{"name": name, "args": args, "id": call_id}]) for name, args, call_id in calls]
    model = ToolCallingFake(messages=iter([*script, AIMessage("Done.")])).bind_tools(tools)

    def agent(state: MessagesState) -> dict[str, list[BaseMessage]]:
        return {"messages": [model.invoke(state["messages"])]}

    graph = StateGraph(MessagesState)
    graph.add_node("agent", agent)
    graph.add_node("tools", GuardedToolNode(tools, guard, **options))  # declared once, for every conversation
    graph.add_edge(START, "agent")
    graph.add_conditional_edges("agent", tools_condition)
    graph.add_edge("tools", "agent")
    return graph.compile(checkpointer=InMemorySaver())


def _told(state: dict[str, Any]) -> dict[str, str]:
    return {m.tool_call_id: m.content for m in state["messages"] if isinstance(m, ToolMessage)}


def test_allowed_denied_and_approved_mid_run(desk: Desk, release_manager: ReleaseManager) -> None:
    desk.at("canary")
    ran: list[str] = []
    guard = LangGraphGuard(TERMS)
    app = _graph([("search_kb", {"query": "refund policy"}, "c1"), ("refund_payment", {"order": "1234"}, "c2"),
                  ("send_email", {"to": "ana@example.com"}, "c3")], _tools(ran), guard)

    async def conversation() -> Any:
        async with AsyncGatekeeper(desk.url, desk.token, timeout=5, approval_poll=0.05) as gk, \
                gk.session(AGENT, session_key=desk.candidate_key()) as session:
            assert session.arm == "candidate"
            return await guard.run(app, {"messages": [HumanMessage("Refund order 1234 and tell Ana")]},
                                   {"configurable": {"thread_id": "t1"}})

    state = asyncio.run(conversation())
    assert state["messages"][-1].content == "Done." and "__interrupt__" not in state
    assert ran == ["search_kb:refund policy", "send_email:ana@example.com"]  # once each, after the node's replay
    assert _told(state) == {"c1": "Refunds take 5 days.", "c2": DENIED_MESSAGE, "c3": "sent"}
    assert [a["arguments"] for a in release_manager.seen] == [{"to": "ana@example.com"}]
    rows = [(r["tool"], r["verdict"], r["reason"], r["outcome_status"]) for r in desk.decisions()]
    assert rows == [("search_kb", "allow", "", "ok"), ("refund_payment", "deny", "sequence_before", None),
                    ("send_email", "approval_required", "approval_required", None),
                    ("send_email", "allow", "", "ok")]


def test_sync_graph_interrupts_and_resumes_after_approval(desk: Desk) -> None:
    desk.at("canary")
    ran: list[str] = []
    guard = LangGraphGuard(TERMS)
    app = _graph([("send_email", {"to": "ana@example.com"}, "c1")], _tools(ran), guard)
    config = {"configurable": {"thread_id": "t1"}}
    with Gatekeeper(desk.url, desk.token, timeout=5) as gk, gk.session(AGENT, session_key=desk.candidate_key()):
        paused = app.invoke({"messages": [HumanMessage("Tell Ana")]}, config)
        [interrupt] = paused["__interrupt__"]
        assert ran == [] and interrupt.value["tool"] == "send_email"
        approval_id = interrupt.value["gatekeeper_approval_id"]
        desk.ok(desk.client.post(f"/v1/approvals/{approval_id}/approve", json={"reason": "ok"}, headers=desk.rm))
        done = app.invoke(Command(resume={"approved": True}), config)
    assert ran == ["send_email:ana@example.com"] and _told(done) == {"c1": "sent"}
    assert [(r["tool"], r["verdict"], r["outcome_status"]) for r in desk.decisions()] == [
        ("send_email", "approval_required", None), ("send_email", "allow", "ok")]


def test_shadowed_tool_does_not_run(desk: Desk) -> None:
    desk.at("shadow")
    ran: list[str] = []
    guard = LangGraphGuard(TERMS)
    app = _graph([("search_kb", {"query": "refund policy"}, "s1"), ("update_ticket", {"ticket": "T-9"}, "s2")],
                 _tools(ran), guard)

    async def candidate_in_shadow() -> Any:
        async with AsyncGatekeeper(desk.url, desk.token, timeout=5) as gk, \
                gk.session(AGENT, session_key="conversation-1") as live:
            mirror = live.mirror_session()
            assert live.arm == "stable" and mirror is not None
            async with mirror.bound():
                return await guard.run(app, {"messages": [HumanMessage("Close ticket T-9")]},
                                       {"configurable": {"thread_id": "t1"}})

    state = asyncio.run(candidate_in_shadow())
    assert state["messages"][-1].content == "Done."
    assert ran == ["search_kb:refund policy"]
    assert _told(state) == {"s1": "Refunds take 5 days.", "s2": SHADOW_MESSAGE}
    assert [(r["tool"], r["verdict"]) for r in desk.decisions()] == [("search_kb", "allow"),
                                                                       ("update_ticket", "shadow")]


def test_a_tool_that_raises_is_reported_as_an_error_and_the_model_told(desk: Desk) -> None:
    desk.at("canary")

    @tool
    def search_kb(query: str) -> str:
        """Search the knowledge base."""
        raise TimeoutError("the knowledge base timed out")

    guard = LangGraphGuard(TERMS)
    app = _graph([("search_kb", {"query": "refunds"}, "e1")], [search_kb], guard, handle_tool_errors=True)

    async def conversation() -> Any:
        async with AsyncGatekeeper(desk.url, desk.token, timeout=5) as gk, \
                gk.session(AGENT, session_key=desk.candidate_key()):
            return await guard.run(app, {"messages": [HumanMessage("How long?")]}, {"configurable": {"thread_id": "t"}})

    state = asyncio.run(conversation())
    assert state["messages"][-1].content == "Done."  # the node turns the exception into a message: the run goes on
    assert "the knowledge base timed out" in _told(state)["e1"]
    assert [(r["tool"], r["verdict"], r["outcome_status"]) for r in desk.decisions()] == [
        ("search_kb", "allow", "error")]


def test_rejected_mid_run_does_not_run(desk: Desk, strict_release_manager: ReleaseManager) -> None:
    desk.at("canary")
    ran: list[str] = []
    guard = LangGraphGuard(TERMS)
    app = _graph([("send_email", {"to": "ana@example.com"}, "r1")], _tools(ran), guard)

    async def conversation() -> Any:
        async with AsyncGatekeeper(desk.url, desk.token, timeout=5, approval_poll=0.05) as gk, \
                gk.session(AGENT, session_key=desk.candidate_key()):
            return await guard.run(app, {"messages": [HumanMessage("Tell Ana")]}, {"configurable": {"thread_id": "t"}})

    state = asyncio.run(conversation())
    assert state["messages"][-1].content == "Done."
    assert ran == [] and len(strict_release_manager.seen) == 1
    assert _told(state) == {"r1": "A person rejected this call, so it must not run."}  # the server's, asked again
    assert [(r["tool"], r["verdict"], r["reason"]) for r in desk.decisions()] == [
        ("send_email", "approval_required", "approval_required"), ("send_email", "deny", "approval_rejected")]


def test_two_approvals_in_one_turn_are_resumed_together(desk: Desk, release_manager: ReleaseManager) -> None:
    desk.at("canary")
    ran: list[str] = []
    guard = LangGraphGuard(TERMS)
    both = AIMessage("", tool_calls=[{"name": "send_email", "args": {"to": "ana@example.com"}, "id": "p1"},
                                     {"name": "update_ticket", "args": {"ticket": "T-9"}, "id": "p2"},
                                     {"name": "send_email", "args": {"to": "bo@example.com"}, "id": "p3"}])
    model = ToolCallingFake(messages=iter([both, AIMessage("Done.")]))
    graph = StateGraph(MessagesState)
    graph.add_node("agent", lambda state: {"messages": [model.invoke(state["messages"])]})
    graph.add_node("tools", GuardedToolNode(_tools(ran), guard))
    graph.add_edge(START, "agent")
    graph.add_conditional_edges("agent", tools_condition)
    graph.add_edge("tools", "agent")
    app = graph.compile(checkpointer=InMemorySaver())

    async def conversation() -> Any:
        async with AsyncGatekeeper(desk.url, desk.token, timeout=5, approval_poll=0.05) as gk, \
                gk.session(AGENT, session_key=desk.candidate_key()):
            return await guard.run(app, {"messages": [HumanMessage("Tell both")]}, {"configurable": {"thread_id": "t"}})

    state = asyncio.run(conversation())
    assert state["messages"][-1].content == "Done."
    assert sorted(ran) == ["send_email:ana@example.com", "send_email:bo@example.com", "update_ticket:T-9"]
    assert _told(state) == {"p1": "sent", "p2": "updated", "p3": "sent"}
    assert len(release_manager.seen) == 2
    rows = sorted((r["tool"], r["verdict"], r["outcome_status"] or "") for r in desk.decisions())
    assert rows == [("send_email", "allow", "ok"), ("send_email", "allow", "ok"),
                    ("send_email", "approval_required", ""), ("send_email", "approval_required", ""),
                    ("update_ticket", "allow", "ok")]  # the reversible call ran once, replays included
