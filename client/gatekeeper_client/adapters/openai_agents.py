"""Gatekeeper for the OpenAI Agents SDK: guarded function tools, approvals through its interruptions.

    from gatekeeper_client.adapters.openai_agents import AgentsGuard

    guard = AgentsGuard({"search_kb": Terms(0.002, read_only=True), "send_email": 0.01})
    agent = Agent(name="support", tools=guard.wrap([search_kb, send_email]))   # once

    async with gk.session("support-bot", session_key=conversation_id):       # per conversation
        result = await guard.run(agent, "Refund order 1234")

Each call is asked about in the tool's `needs_approval` hook: when a person must approve, the run stops with
the SDK's own interruption; `guard.resolve(result)` waits for the release manager's decision in Gatekeeper and
approves or rejects the interruption on the run state, and the resumed run runs the call once. A denied or
shadowed call does not run: the model receives the server's plain message as the tool's output.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, cast

from agents import Agent, FunctionTool, RunContextWrapper, Runner, RunResult, RunState
from agents.items import ToolApprovalItem
from agents.tool_context import ToolContext

from gatekeeper_client.adapters._calls import Call, CallGuard, Resolution, Terms, refusal_message

__all__ = ["AgentsGuard", "Terms"]
Invoker = Callable[[ToolContext[Any], str], Awaitable[Any]]
MAX_INTERRUPTIONS = 20  # rounds of approvals one `run` waits through before it gives the result back


class AgentsGuard(CallGuard):
    """Guard an agent's function tools with Gatekeeper; see the module's docstring."""

    def wrap(self, tools: Iterable[FunctionTool]) -> list[FunctionTool]:
        """Return the tools guarded: each call asked about, run once when allowed, its outcome reported."""
        return [self.wrap_tool(tool) for tool in tools]

    def wrap_tool(self, tool: FunctionTool) -> FunctionTool:
        """Return one function tool guarded (its own `needs_approval` is replaced by Gatekeeper's verdict).

        The guard goes inside the tool's failure handling, so a tool that raises is reported as an `error`
        outcome (what the kill switch counts) and the model still gets the tool's own error message.
        """
        invoke, handle_failures = _without_failure_handling(tool.on_invoke_tool)

        async def needs_approval(context: RunContextWrapper[Any], arguments: dict[str, Any], call_id: str) -> bool:
            decision = await self.ask(Call(tool.name, dict(arguments), call_id))
            return decision.verdict == "approval_required" and not decision.offline

        async def guarded(context: ToolContext[Any], raw: str) -> Any:
            call = Call(tool.name, _arguments(raw), context.tool_call_id)
            decision = await self.ask_approved(call)
            if not decision.allowed:
                return refusal_message(call, decision)
            return await self.execute(call, decision, lambda: invoke(context, raw))

        return dataclasses.replace(tool, on_invoke_tool=handle_failures(guarded), needs_approval=needs_approval)

    async def resolve(self, result: RunResult | RunState[Any], *, timeout: float | None = None) -> RunState[Any]:
        """Wait for a person's decision on every interruption and record it on the run state, to resume with."""
        state = result.to_state() if isinstance(result, RunResult) else result
        items = state.get_interruptions()
        for item, resolution in zip(items, await asyncio.gather(*(self._decided(item, timeout) for item in items)),
                                    strict=True):
            if resolution is None or resolution.approved:
                state.approve(item)  # nothing for a person to decide (the tool answers with the verdict), or approved
            else:
                state.reject(item, rejection_message=resolution.message)
        return state

    async def _decided(self, item: ToolApprovalItem, timeout: float | None) -> Resolution | None:
        """Wait for the person who must approve one interrupted call; None when Gatekeeper asks no one."""
        raw = item.raw_item
        call = Call(item.tool_name or "", _arguments(_field(raw, "arguments")), _field(raw, "call_id"))
        decision = await self.ask(call)
        if decision.verdict != "approval_required" or not decision.approval_id:
            return None
        return await self.wait(decision.approval_id, timeout=timeout)

    async def run(self, agent: Agent[Any], input: Any, **options: Any) -> RunResult:
        """Run the agent to its end, waiting for a person wherever Gatekeeper asks for an approval."""
        result = await Runner.run(agent, input, **options)
        for _ in range(MAX_INTERRUPTIONS):
            if not result.interruptions:
                break
            result = await Runner.run(agent, await self.resolve(result), **options)
        return result


def _without_failure_handling(handling: Invoker) -> tuple[Invoker, Callable[[Invoker], Invoker]]:
    """Split a function tool's invoker into the bare call and a way to put its failure handling around another.

    `@function_tool` wraps the call in a handler that turns an exception into a message for the model; the
    guard goes inside it to see the exception. An invoker of another shape is kept whole (errors unseen).
    """
    bare, on_error = getattr(handling, "_invoke_tool_impl", None), getattr(handling, "_on_handled_error", None)
    kind: Any = type(handling)
    if bare is None or on_error is None:
        return handling, lambda invoker: invoker
    try:
        kind(bare, on_error)
    except TypeError:
        return handling, lambda invoker: invoker
    return bare, lambda invoker: cast(Invoker, kind(invoker, on_error))


def _arguments(raw: str | None) -> dict[str, Any]:
    parsed = json.loads(raw) if raw else {}
    return parsed if isinstance(parsed, dict) else {"input": parsed}


def _field(raw: Any, name: str) -> Any:
    return raw.get(name) if isinstance(raw, Mapping) else getattr(raw, name, None)
