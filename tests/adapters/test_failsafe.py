"""Every adapter fails safe when Gatekeeper cannot be reached: read-only tools run, the rest are refused in words."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from agents import Agent, function_tool, set_tracing_disabled
from agents.testing import ScriptedModel, assistant_message, function_call
from gatekeeper_client import AsyncGatekeeper
from gatekeeper_client.adapters.langgraph import GuardedToolNode, LangGraphGuard
from gatekeeper_client.adapters.openai_agents import AgentsGuard
from gatekeeper_client.adapters.pydantic_ai import GatekeeperCapability
from gatekeeper_client.adapters.pydantic_ai import Terms as PydanticTerms
from gatekeeper_client.models import UNREACHABLE_MESSAGE
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_core.tools import tool
from langgraph.graph import START, MessagesState, StateGraph
from pydantic_ai import Agent as PydanticAgent
from pydantic_ai.messages import ModelMessage, ModelResponse, TextPart, ToolCallPart, ToolReturnPart
from pydantic_ai.models.function import AgentInfo, FunctionModel
from werkzeug.serving import make_server

from tests.support.adapters import AGENT, Desk
from tests.support.services import free_port

TERMS = {"search_kb": PydanticTerms(0.002, read_only=True), "send_email": 0.01}
CALLS = [("search_kb", {"query": "refunds"}, "c1"), ("send_email", {"to": "ana@example.com"}, "c2")]


def _openai_agents(ran: list[str]) -> Any:
    @function_tool
    def search_kb(query: str) -> str:
        """Search the knowledge base."""
        ran.append("search_kb")
        return "found"

    @function_tool
    def send_email(to: str) -> str:
        """Email a customer."""
        ran.append("send_email")
        return "sent"

    set_tracing_disabled(True)
    model = ScriptedModel([[function_call(name, args, call_id=call_id)] for name, args, call_id in CALLS]
                          + [[assistant_message("Done.")]])
    guard = AgentsGuard(TERMS)
    agent = Agent(name="helpdesk", model=model, tools=guard.wrap([search_kb, send_email]))

    async def run() -> dict[str, str]:
        await guard.run(agent, "hi")
        return {i["call_id"]: i["output"] for i in model.calls[-1].input
                if isinstance(i, dict) and i.get("type") == "function_call_output"}

    return run


def _pydantic_ai(ran: list[str]) -> Any:
    told: dict[str, str] = {}

    def script(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        told.update({p.tool_call_id: p.content for m in messages for p in getattr(m, "parts", [])
                     if isinstance(p, ToolReturnPart)})
        turn = sum(1 for m in messages if isinstance(m, ModelResponse))
        if turn < len(CALLS):
            name, args, call_id = CALLS[turn]
            return ModelResponse(parts=[ToolCallPart(name, args, tool_call_id=call_id)])
        return ModelResponse(parts=[TextPart("Done.")])

    agent = PydanticAgent(FunctionModel(script), capabilities=[GatekeeperCapability(TERMS)])

    @agent.tool_plain
    def search_kb(query: str) -> str:
        ran.append("search_kb")
        return "found"

    @agent.tool_plain
    def send_email(to: str) -> str:
        ran.append("send_email")
        return "sent"

    async def run() -> dict[str, str]:
        await agent.run("hi")
        return told

    return run


def _langgraph(ran: list[str]) -> Any:
    @tool
    def search_kb(query: str) -> str:
        """Search the knowledge base."""
        ran.append("search_kb")
        return "found"

    @tool
    def send_email(to: str) -> str:
        """Email a customer."""
        ran.append("send_email")
        return "sent"

    calls = [{"name": name, "args": args, "id": call_id} for name, args, call_id in CALLS]
    graph = StateGraph(MessagesState)
    graph.add_node("agent", lambda state: {"messages": [AIMessage("", tool_calls=calls)]})
    graph.add_node("tools", GuardedToolNode([search_kb, send_email], LangGraphGuard(TERMS)))
    graph.add_edge(START, "agent")
    graph.add_edge("agent", "tools")
    app = graph.compile()

    async def run() -> dict[str, str]:
        state = await app.ainvoke({"messages": [HumanMessage("hi")]})
        return {m.tool_call_id: m.content for m in state["messages"] if isinstance(m, ToolMessage)}

    return run


@pytest.mark.parametrize("framework", [_openai_agents, _pydantic_ai, _langgraph])
def test_unreachable_server_runs_read_only_tools_and_refuses_the_rest(framework: Any) -> None:
    ran: list[str] = []
    run = framework(ran)

    async def conversation() -> dict[str, str]:
        async with AsyncGatekeeper(f"http://127.0.0.1:{free_port()}", "token", timeout=1, retries=0,
                                  reconnect_after=0) as gk, \
                gk.session("helpdesk", session_key="conversation-1"):
            told: dict[str, str] = await run()
            return told

    told = asyncio.run(conversation())
    assert ran == ["search_kb"]
    assert told == {"c1": "found", "c2": UNREACHABLE_MESSAGE}


@contextmanager
def serving(desk: Desk, port: int) -> Iterator[None]:
    """Serve the real app on a chosen loopback port: the server coming back at the address the client knows."""
    server = make_server("127.0.0.1", port, desk.app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def test_calls_run_while_unreachable_are_caught_up_when_the_server_returns(desk: Desk) -> None:
    desk.at("expansion")  # no approvals: once the server is back, send_email is allowed
    ran: list[str] = []
    run = _langgraph(ran)
    port = free_port()

    async def conversation() -> tuple[dict[str, str], dict[str, str]]:
        async with AsyncGatekeeper(f"http://127.0.0.1:{port}", desk.token, timeout=1, retries=0,
                                  reconnect_after=0) as gk, \
                gk.session(AGENT, session_key=desk.candidate_key()) as session:
            offline = await run()
            assert session.session_id is None
            with serving(desk, port):
                back = await run()
                assert session.session_id is not None
            return offline, back

    offline, back = asyncio.run(conversation())
    assert offline == {"c1": "found", "c2": UNREACHABLE_MESSAGE}
    assert back == {"c1": "found", "c2": "sent"}
    assert sorted(ran) == ["search_kb", "search_kb", "send_email"]
    rows = [(r["tool"], r["verdict"], r["outcome_status"]) for r in desk.decisions()]
    assert rows[0] == ("search_kb", "allow", "ok")  # the offline call, replayed and reported first
    assert sorted(rows[1:]) == [("search_kb", "allow", "ok"), ("send_email", "allow", "ok")]
