"""Gatekeeper for LangGraph: a guarded tool node, approvals through `interrupt`.

    from gatekeeper_client.adapters.langgraph import GuardedToolNode, LangGraphGuard

    guard = LangGraphGuard({"search_kb": Terms(0.002, read_only=True), "send_email": 0.01})
    graph.add_node("tools", GuardedToolNode([search_kb, send_email], guard))       # once
    app = graph.compile(checkpointer=saver)

    async with gk.session("support-bot", session_key=conversation_id):            # per conversation
        state = await guard.run(app, {"messages": [...]}, config)

A call a person must approve pauses the graph with `interrupt(...)`, whose value names the Gatekeeper approval
(`gatekeeper_approval_id`, with the tool, its arguments and the plain message). Resume with
`Command(resume=...)` once the release manager has decided (`await guard.resume_value(interrupt)` waits for
that); `guard.run` does both in a loop. The node replays the call on resume: it asks under the same request
id, so nothing is reserved twice, then asks with the approval and runs the call once. What the server says
decides, not the resume value. A denied or shadowed call does not run: the model receives the server's plain
message as the tool message.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from langchain_core.messages import ToolMessage
from langgraph.prebuilt import ToolNode
from langgraph.prebuilt.tool_node import ToolCallRequest
from langgraph.types import Command, Interrupt, interrupt

from gatekeeper_client._chaos import damaged
from gatekeeper_client._client import AsyncSession
from gatekeeper_client.adapters._calls import APPROVAL_KEY, Call, CallGuard, Terms, refusal_message
from gatekeeper_client.guard import NoSession

__all__ = ["GuardedToolNode", "LangGraphGuard", "Terms"]
MAX_INTERRUPTIONS = 20  # rounds of approvals one `run` waits through before it gives the state back
NodeResult = ToolMessage | Command[Any]


class LangGraphGuard(CallGuard):
    """Ask Gatekeeper about a tool node's calls; see the module's docstring."""

    async def around(self, request: ToolCallRequest, execute: Callable[[ToolCallRequest], Awaitable[NodeResult]]
                     ) -> NodeResult:
        """Ask about one tool call; interrupt for a person, refuse with the plain message, or run it once."""
        tool_call = request.tool_call
        call = Call(tool_call["name"], dict(tool_call["args"]), tool_call.get("id"))
        decision = await self.ask(call)
        if decision.verdict == "approval_required" and decision.approval_id:
            interrupt({APPROVAL_KEY: decision.approval_id, "tool": call.tool, "arguments": call.arguments,
                       "message": decision.message})
            decision = await self.ask(call, approval_id=decision.approval_id)
        if not decision.allowed:
            return ToolMessage(refusal_message(call, decision), name=call.tool, tool_call_id=call.call_id or "",
                               status="error")
        outcome: NodeResult = await self.execute(
            call, decision, lambda: execute(request), failed=_failed, damage=_damaged,
            failure=lambda exc: ToolMessage(str(exc), name=call.tool, tool_call_id=call.call_id or "", status="error"))
        return outcome

    def around_sync(self, request: ToolCallRequest, execute: Callable[[ToolCallRequest], NodeResult]) -> NodeResult:
        """The same for a graph run synchronously (`invoke`), with a sync session."""
        if isinstance(self.current(), AsyncSession):
            raise NoSession("a graph run with invoke() needs a sync session (Gatekeeper); use ainvoke() with an "
                            "AsyncGatekeeper session")
        return asyncio.run(self.around(request, lambda again: asyncio.to_thread(execute, again)))

    async def resume_value(self, paused: Interrupt, *, timeout: float | None = None) -> dict[str, Any]:
        """Wait for the person's decision on one interrupt of this guard; return the value to resume it with."""
        resolution = await self.wait(paused.value[APPROVAL_KEY], timeout=timeout)
        return {"approval_id": resolution.approval_id, "state": resolution.state, "message": resolution.message}

    async def run(self, graph: Any, input: Any, config: Any, **options: Any) -> Any:
        """Run a compiled graph (with a checkpointer) to its end, waiting for a person at each of our interrupts."""
        state = await graph.ainvoke(input, config, **options)
        for _ in range(MAX_INTERRUPTIONS):
            ours = [paused for paused in state.get("__interrupt__", ()) if _is_ours(paused)]
            if not ours:
                break
            waited = await asyncio.gather(*(self.resume_value(paused) for paused in ours))  # people decide in parallel
            values = {paused.id: value for paused, value in zip(ours, waited, strict=True)}
            state = await graph.ainvoke(Command(resume=values), config, **options)
        return state


class GuardedToolNode(ToolNode):
    """A `ToolNode` whose every call is asked about first (sync and async runs alike)."""

    def __init__(self, tools: Sequence[Any], guard: LangGraphGuard, **options: Any) -> None:
        super().__init__(tools, wrap_tool_call=guard.around_sync, awrap_tool_call=guard.around, **options)
        self.guard = guard


def _damaged(outcome: Any, fault: str | None) -> Any:
    """A rehearsed partial or malformed result: the tool message's text truncated or garbled."""
    if isinstance(outcome, ToolMessage) and isinstance(outcome.content, str):
        return outcome.model_copy(update={"content": damaged(outcome.content, fault)})
    return outcome


def _failed(outcome: Any) -> bool:
    """Return whether the node turned the tool's exception into an error message (`handle_tool_errors`)."""
    return isinstance(outcome, ToolMessage) and outcome.status == "error"


def _is_ours(paused: Interrupt) -> bool:
    return isinstance(paused.value, dict) and APPROVAL_KEY in paused.value
