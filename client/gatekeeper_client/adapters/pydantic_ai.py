"""Gatekeeper for Pydantic AI: a capability (every tool of an agent) or a toolset (some), approvals as deferred tools.

    from gatekeeper_client.adapters.pydantic_ai import GatekeeperCapability

    guard = GatekeeperCapability({"search_kb": Terms(0.002, read_only=True), "send_email": 0.01})
    agent = Agent(model, tools=[search_kb, send_email], capabilities=[guard],
                  output_type=[str, DeferredToolRequests])                          # once

    async with gk.session("support-bot", session_key=conversation_id):              # per conversation
        result = await agent.run("Refund order 1234")

A call a person must approve is deferred the Pydantic AI way (`ApprovalRequired`, with the Gatekeeper approval
id in its metadata). With `wait=True` (the default) the capability resolves it inline: it waits (bounded) for
the release manager's decision in Gatekeeper and the run goes on, running the call once or telling the model
it was refused. With `wait=False` the run ends with `DeferredToolRequests`; `await guard.resolve(requests)`
waits for the decisions and returns the `DeferredToolResults` to run again with. A denied or shadowed call does
not run: the model receives the server's plain message as the tool's return.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic_ai import DeferredToolRequests, DeferredToolResults, RunContext, ToolDenied
from pydantic_ai.capabilities import AbstractCapability
from pydantic_ai.exceptions import ApprovalRequired
from pydantic_ai.messages import ToolCallPart
from pydantic_ai.tools import ToolDefinition
from pydantic_ai.toolsets import WrapperToolset
from pydantic_ai.toolsets.abstract import ToolsetTool

from gatekeeper_client._client import AsyncSession, Session
from gatekeeper_client.adapters._calls import APPROVAL_KEY, Call, CallGuard, Terms, refusal_message

__all__ = ["GatekeeperCapability", "GatekeeperToolset", "Terms"]


async def _guarded(guard: CallGuard, ctx: RunContext[Any], call: Call, invoke: Callable[[], Awaitable[Any]]) -> Any:
    """Ask about one call, defer it for a person or refuse it with the plain message, else run it once."""
    decision = await guard.ask(call)
    if decision.verdict == "approval_required" and decision.approval_id:
        if not ctx.tool_call_approved:
            raise ApprovalRequired(metadata={APPROVAL_KEY: decision.approval_id, "message": decision.message})
        decision = await guard.ask(call, approval_id=decision.approval_id)
    if not decision.allowed:
        return refusal_message(call, decision)
    return await guard.execute(call, decision, invoke)


async def _resolve(guard: CallGuard, requests: DeferredToolRequests, *, timeout: float | None
                   ) -> DeferredToolResults | None:
    """Wait for a person's decision on each deferred call Gatekeeper asked about; None when there is none."""
    ours = {part.tool_call_id: approval_id for part in requests.approvals  # others' deferrals are left to them
            if (approval_id := (requests.metadata.get(part.tool_call_id) or {}).get(APPROVAL_KEY))}
    resolutions = await asyncio.gather(*(guard.wait(approval_id, timeout=timeout) for approval_id in ours.values()))
    approvals: dict[str, bool | ToolDenied] = {
        call_id: True if resolution.approved else ToolDenied(resolution.message)
        for call_id, resolution in zip(ours, resolutions, strict=True)}
    return requests.build_results(approvals=approvals) if approvals else None


@dataclass
class GatekeeperCapability(AbstractCapability[Any]):
    """Guard every tool call of an agent with Gatekeeper; see the module's docstring."""

    tools: Mapping[str, Terms | float] = field(default_factory=dict)
    session: Session | AsyncSession | None = None
    default_cost: float = 0.0
    wait: bool = True  # resolve approvals inline, waiting for a person (bounded by approval_timeout)
    approval_timeout: float | None = None

    def __post_init__(self) -> None:
        self.guard = CallGuard(self.tools, self.session, self.default_cost, self.approval_timeout)

    async def wrap_tool_execute(self, ctx: RunContext[Any], *, call: ToolCallPart, tool_def: ToolDefinition,
                                args: Any, handler: Any) -> Any:
        """Ask before the tool runs; run it once through the handler when allowed."""
        return await _guarded(self.guard, ctx, Call(call.tool_name, call.args_as_dict(), call.tool_call_id),
                              lambda: handler(args))

    async def handle_deferred_tool_calls(self, ctx: RunContext[Any], *, requests: DeferredToolRequests
                                         ) -> DeferredToolResults | None:
        """Wait inline for the people who must approve (when `wait`), so the run goes on by itself."""
        return await _resolve(self.guard, requests, timeout=self.approval_timeout) if self.wait else None

    async def resolve(self, requests: DeferredToolRequests, *, timeout: float | None = None) -> DeferredToolResults:
        """Wait for the decisions on a paused run's approvals; return the results to run the agent again with."""
        return await _resolve(self.guard, requests, timeout=timeout) or DeferredToolResults()


@dataclass
class GatekeeperToolset(WrapperToolset[Any]):
    """Guard the tools of one toolset with Gatekeeper (approvals end the run as `DeferredToolRequests`)."""

    tools: Mapping[str, Terms | float] = field(default_factory=dict)
    session: Session | AsyncSession | None = None
    default_cost: float = 0.0
    approval_timeout: float | None = None

    def __post_init__(self) -> None:
        self.guard = CallGuard(self.tools, self.session, self.default_cost, self.approval_timeout)

    async def call_tool(self, name: str, tool_args: dict[str, Any], ctx: RunContext[Any],
                        tool: ToolsetTool[Any]) -> Any:
        """Ask before the wrapped toolset runs the tool; run it once when allowed."""
        arguments = json.loads(json.dumps(tool_args, default=str))  # validated values, as JSON for the server
        return await _guarded(self.guard, ctx, Call(name, arguments, ctx.tool_call_id),
                              lambda: self.wrapped.call_tool(name, tool_args, ctx, tool))

    async def resolve(self, requests: DeferredToolRequests, *, timeout: float | None = None) -> DeferredToolResults:
        """Wait for the decisions on a paused run's approvals; return the results to run the agent again with."""
        return await _resolve(self.guard, requests, timeout=timeout) or DeferredToolResults()
