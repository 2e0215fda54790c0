"""The OpenAI Agents SDK adapter, driven by the SDK's own scripted test model against the real app."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from agents import Agent, function_tool, set_tracing_disabled
from agents.testing import ScriptedModel, assistant_message, function_call
from gatekeeper_client import AsyncGatekeeper
from gatekeeper_client.adapters.openai_agents import AgentsGuard, Terms
from sqlalchemy import text

from tests.support.adapters import AGENT, DENIED_MESSAGE, REJECTED_MESSAGE, SHADOW_MESSAGE, Desk, ReleaseManager


def _tools(ran: list[str]) -> list[Any]:
    @function_tool
    def search_kb(query: str) -> str:
        """Search the knowledge base."""
        ran.append(f"search_kb:{query}")
        return "Refunds take 5 days."

    @function_tool
    def refund_payment(order: str) -> str:
        """Refund an order."""
        ran.append(f"refund_payment:{order}")
        return "refunded"

    @function_tool
    def send_email(to: str) -> str:
        """Email a customer."""
        ran.append(f"send_email:{to}")
        return "sent"

    @function_tool
    def update_ticket(ticket: str) -> str:
        """Update a ticket."""
        ran.append(f"update_ticket:{ticket}")
        return "updated"

    return [search_kb, refund_payment, send_email, update_ticket]


@pytest.fixture(autouse=True)
def no_tracing() -> Any:
    """Keep the SDK's tracing off: nothing leaves the machine."""
    set_tracing_disabled(True)
    yield
    set_tracing_disabled(False)


GUARD_TERMS = {"search_kb": Terms(0.002, read_only=True), "refund_payment": 0.05, "send_email": 0.01,
               "update_ticket": 0.01}


def _outputs(model: ScriptedModel) -> dict[str, str]:
    """Return what the model was told each call returned, by call id, as of its last turn."""
    last = model.calls[-1].input
    return {item["call_id"]: item["output"] for item in last if isinstance(item, dict)
            and item.get("type") == "function_call_output"}


def test_allowed_denied_and_approved_mid_run(desk: Desk, release_manager: ReleaseManager) -> None:
    desk.at("canary")
    ran: list[str] = []
    model = ScriptedModel([
        [function_call("search_kb", {"query": "refund policy"}, call_id="c1")],
        [function_call("refund_payment", {"order": "1234"}, call_id="c2")],
        [function_call("send_email", {"to": "ana@example.com"}, call_id="c3")],
        [assistant_message("Done.")],
    ])
    guard = AgentsGuard(GUARD_TERMS)
    agent = Agent(name="helpdesk", model=model, tools=guard.wrap(_tools(ran)))  # wrapped once

    async def conversation() -> Any:
        async with AsyncGatekeeper(desk.url, desk.token, timeout=5, approval_poll=0.05) as gk, \
                gk.session(AGENT, session_key=desk.candidate_key()) as session:
            assert session.arm == "candidate"
            return await guard.run(agent, "Refund order 1234 and tell Ana")

    result = asyncio.run(conversation())
    assert result.final_output == "Done."
    model.assert_complete()
    assert ran == ["search_kb:refund policy", "send_email:ana@example.com"]  # each once; the refund never
    told = _outputs(model)
    assert told == {"c1": "Refunds take 5 days.", "c2": DENIED_MESSAGE, "c3": "sent"}
    assert [a["arguments"] for a in release_manager.seen] == [{"to": "ana@example.com"}]
    rows = [(r["tool"], r["verdict"], r["reason"], r["outcome_status"]) for r in desk.decisions()]
    assert rows == [("search_kb", "allow", "", "ok"), ("refund_payment", "deny", "sequence_before", None),
                    ("send_email", "approval_required", "approval_required", None),
                    ("send_email", "allow", "", "ok")]
    assert all(r["latency_ms"] is not None for r in desk.decisions() if r["outcome_status"])


def test_shadowed_tool_does_not_run(desk: Desk) -> None:
    desk.at("shadow")
    ran: list[str] = []
    model = ScriptedModel([
        [function_call("search_kb", {"query": "refund policy"}, call_id="s1")],
        [function_call("update_ticket", {"ticket": "T-9"}, call_id="s2")],
        [assistant_message("Done.")],
    ])
    guard = AgentsGuard(GUARD_TERMS)
    agent = Agent(name="helpdesk-v2", model=model, tools=guard.wrap(_tools(ran)))

    async def candidate_in_shadow() -> Any:
        async with AsyncGatekeeper(desk.url, desk.token, timeout=5) as gk, \
                gk.session(AGENT, session_key="conversation-1") as live:
            mirror = live.mirror_session()
            assert live.arm == "stable" and mirror is not None
            async with mirror.bound():
                return await guard.run(agent, "Close ticket T-9")

    assert asyncio.run(candidate_in_shadow()).final_output == "Done."
    assert ran == ["search_kb:refund policy"]  # read-only runs in shadow; the ticket update does not
    assert _outputs(model) == {"s1": "Refunds take 5 days.", "s2": SHADOW_MESSAGE}
    assert [(r["tool"], r["verdict"]) for r in desk.decisions()] == [("search_kb", "allow"),
                                                                       ("update_ticket", "shadow")]


def test_a_tool_that_raises_is_reported_as_an_error_and_the_model_told(desk: Desk) -> None:
    desk.at("canary")

    @function_tool
    def search_kb(query: str) -> str:
        """Search the knowledge base."""
        raise TimeoutError("the knowledge base timed out")

    model = ScriptedModel([[function_call("search_kb", {"query": "refunds"}, call_id="e1")],
                           [assistant_message("Sorry.")]])
    guard = AgentsGuard(GUARD_TERMS)
    agent = Agent(name="helpdesk", model=model, tools=guard.wrap([search_kb]))

    async def conversation() -> Any:
        async with AsyncGatekeeper(desk.url, desk.token, timeout=5) as gk, \
                gk.session(AGENT, session_key=desk.candidate_key()):
            return await guard.run(agent, "How long do refunds take?")

    assert asyncio.run(conversation()).final_output == "Sorry."  # the run goes on, as without the guard
    assert "error occurred" in _outputs(model)["e1"]  # the SDK's own failure message reaches the model
    assert [(r["tool"], r["verdict"], r["outcome_status"]) for r in desk.decisions()] == [
        ("search_kb", "allow", "error")]


def test_rejected_mid_run_does_not_run(desk: Desk, strict_release_manager: ReleaseManager) -> None:
    desk.at("canary")
    ran: list[str] = []
    model = ScriptedModel([[function_call("send_email", {"to": "ana@example.com"}, call_id="r1")],
                           [assistant_message("I could not email Ana.")]])
    guard = AgentsGuard(GUARD_TERMS)
    agent = Agent(name="helpdesk", model=model, tools=guard.wrap(_tools(ran)))

    async def conversation() -> Any:
        async with AsyncGatekeeper(desk.url, desk.token, timeout=5, approval_poll=0.05) as gk, \
                gk.session(AGENT, session_key=desk.candidate_key()):
            return await guard.run(agent, "Tell Ana")

    assert asyncio.run(conversation()).final_output == "I could not email Ana."
    assert ran == [] and len(strict_release_manager.seen) == 1
    assert _outputs(model) == {"r1": REJECTED_MESSAGE}


def test_tools_wrapped_once_serve_concurrent_conversations_each_in_its_session(desk: Desk) -> None:
    desk.at("canary")
    ran: list[str] = []
    guard = AgentsGuard(GUARD_TERMS)
    agent = Agent(name="helpdesk", tools=guard.wrap(_tools(ran)))  # one set of tool objects for every run

    async def conversation(gk: AsyncGatekeeper, n: int) -> str | None:
        model = ScriptedModel([[function_call("search_kb", {"query": f"question {n}"}, call_id="q1")],
                               [assistant_message(f"Answer {n}.")]])
        async with gk.session(AGENT, session_key=desk.candidate_key(start=n * 100)) as session:
            assert (await guard.run(agent.clone(model=model), "?")).final_output == f"Answer {n}."
            return session.session_id

    async def conversations() -> list[str | None]:
        async with AsyncGatekeeper(desk.url, desk.token, timeout=5) as gk:
            return list(await asyncio.gather(*(conversation(gk, n) for n in range(4))))

    sessions = asyncio.run(conversations())
    assert len(set(sessions)) == 4 and sorted(ran) == [f"search_kb:question {n}" for n in range(4)]
    with desk.app.extensions["gatekeeper"].db.engine.connect() as connection:
        rows = connection.execute(text("SELECT session_id, arguments FROM decisions")).all()
    assert sorted((session, json.loads(arguments)["query"]) for session, arguments in rows) == sorted(
        (session, f"question {n}") for n, session in enumerate(sessions))
