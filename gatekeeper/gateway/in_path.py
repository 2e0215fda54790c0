"""Every `tools/call` of the lean path decided in the path: forwarded, recorded, refused or asked about.

The flow is `ToolGate`'s (the same session, verdict and approval logic as the SDK path) on raw
JSON-RPC: an allowed call's own body goes to the upstream and its answer comes back as the upstream
sent it; the messages the gateway builds (tool errors, `elicitation/create` mid-call up to
2025-11-25, `InputRequiredResult` on 2026-07-28) are the mcp SDK's types.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import anyio
import mcp_types as types
from mcp.shared.exceptions import MCPError
from mcp_types import CLIENT_CAPABILITIES_META_KEY, INVALID_PARAMS

from gatekeeper.gateway.callers import Caller
from gatekeeper.gateway.deciding import Ruling
from gatekeeper.gateway.rehearsal import delayed, outcome_status, rehearsed
from gatekeeper.gateway.relay import Reply, UpstreamPool, error, exchange, response
from gatekeeper.gateway.tool_calls import (
    APPROVAL_INPUT,
    SessionState,
    ToolGate,
    approval_question,
    cost_in,
    text_result,
)

ELICIT_WAIT_S = 600.0  # how long a mid-call elicitation waits for the agent's answer


@dataclass(eq=False, slots=True)
class LeanSession:
    """One MCP session (up to 2025-11-25) on the lean path: the gateway's id maps to the upstream's."""

    caller: Caller
    pool: UpstreamPool
    upstream_id: str | None
    elicit: bool
    state: SessionState | None = None  # the Gatekeeper session, opened at the first tools/list or tools/call
    pending: dict[str, Any] = field(default_factory=dict)  # elicitation id -> the event its answer sets
    streams: set[anyio.CancelScope] = field(default_factory=set)  # open GET streams, closed with the session
    last_used: float = field(default_factory=time.monotonic)


class InPath:
    """The tools/call flow of the lean path, over the gate's sessions and verdicts."""

    def __init__(self, gate: ToolGate) -> None:
        self.gate = gate
        self._ids = itertools.count(1)

    async def state(self, caller: Caller, lean: LeanSession | None, modern: bool) -> SessionState:
        """Return the Gatekeeper session of the request, opening it at the first one that needs it."""
        if modern or lean is None:
            return await self.gate.envelope_state(caller)  # MCPError without a session key
        if lean.state is None:
            async with self.gate.opening:
                if lean.state is None:
                    lean.state = SessionState(await self.gate.open_session(caller))
        return lean.state

    async def call(self, reply: Reply, headers: Mapping[str, str], body: bytes, message: dict[str, Any],
                    caller: Caller, pool: UpstreamPool, lean: LeanSession | None, modern: bool) -> None:
        """Decide one tools/call, then forward, record, refuse or ask about it by its verdict."""
        request_id = message["id"]
        params: dict[str, Any] = message["params"] if isinstance(message.get("params"), dict) else {}
        tool, arguments = params.get("name"), params.get("arguments") or {}
        if not isinstance(tool, str) or not isinstance(arguments, dict) or (lean is None and not modern):
            problem = "a tools/call needs params.name and object params.arguments" if lean or modern else \
                "no MCP session: initialize first"
            return await reply.message(error(request_id, INVALID_PARAMS, problem), status=400)
        try:
            state = await self.state(caller, lean, modern)
            ruling = await self.gate.rule(state, tool, arguments)
            if ruling.verdict == "approval_required":
                if modern:
                    asked = await self._input_required(params, state, ruling, tool, arguments)
                    if isinstance(asked, types.InputRequiredResult):
                        return await reply.message(response(request_id, _dump(asked, modern)))
                    ruling = asked
                elif lean is not None and lean.elicit:
                    ruling = await self._elicit(reply, lean, state, ruling, tool, arguments)
            self.gate.ruled(state, tool, arguments, ruling)
            if ruling.verdict == "allow":
                await self.forward(reply, headers, body, request_id, state, ruling, pool, lean, modern, tool=tool)
            else:
                await reply.message(response(request_id, _dump(self.gate.answer(ruling), modern)))
        except MCPError as exc:
            await reply.message(error(request_id, exc.error.code, exc.error.message))
        finally:
            if reply.streaming:
                await reply.end()

    async def _input_required(self, params: dict[str, Any], state: SessionState, ruling: Ruling, tool: str,
                              arguments: dict[str, Any]) -> Ruling | types.InputRequiredResult:
        """2026-07-28: ask in an InputRequiredResult; on the retry carrying the answer, decide again."""
        answer = (params.get("inputResponses") or {}).get(APPROVAL_INPUT)
        if answer is None:
            capabilities = ((params.get("_meta") or {}).get(CLIENT_CAPABILITIES_META_KEY) or {})
            if not isinstance(capabilities, dict) or capabilities.get("elicitation") is None:
                return ruling
            request = types.ElicitRequest(params=types.ElicitRequestFormParams(
                message=approval_question(ruling, tool), requested_schema={"type": "object", "properties": {}}))
            return types.InputRequiredResult(input_requests={APPROVAL_INPUT: request},
                                             request_state=json.dumps({"approval_id": ruling.approval_id}))
        if not _accepted(answer):
            return ruling
        await self.gate.settled(ruling.approval_id or "")
        return await self.gate.decide(state.opened, tool, arguments, approval_id=ruling.approval_id)

    async def _elicit(self, reply: Reply, lean: LeanSession, state: SessionState, ruling: Ruling, tool: str,
                      arguments: dict[str, Any]) -> Ruling:
        """Up to 2025-11-25: ask mid-call with `elicitation/create` on this request's SSE stream."""
        asked_id = f"gatekeeper-{next(self._ids)}"
        answered = anyio.Event()
        box: dict[str, Any] = {}
        lean.pending[asked_id] = _Setter(answered, box)
        request = types.ElicitRequest(params=types.ElicitRequestFormParams(
            message=approval_question(ruling, tool), requested_schema={"type": "object", "properties": {}}))
        await reply.open_stream()
        await reply.message({"jsonrpc": "2.0", "id": asked_id, **_dump(request, False)})
        with anyio.move_on_after(ELICIT_WAIT_S):
            await answered.wait()
        lean.pending.pop(asked_id, None)
        if not _accepted(box.get("message", {}).get("result")):
            return ruling
        await self.gate.settled(ruling.approval_id or "")
        return await self.gate.decide(state.opened, tool, arguments, approval_id=ruling.approval_id)

    async def forward(self, reply: Reply, headers: Mapping[str, str], body: bytes, request_id: Any,
                       state: SessionState, ruling: Ruling, pool: UpstreamPool, lean: LeanSession | None,
                       modern: bool, *, tool: str) -> None:
        """Send the allowed call's own body upstream, stream the answer back, and report its outcome; a twin's
        rehearsed failure (rehearsal.py) is applied here: the upstream's answer is then changed, never passed."""
        started = time.perf_counter()
        fault = await delayed(ruling, agent=state.opened.agent, metrics=self.gate.metrics)
        if fault == "error":  # not forwarded
            await self.gate.report(state, ruling, status="error", seconds=time.perf_counter() - started, actual=None,
                                   kind=None, upstream=False)
            return await reply.message(response(request_id, rehearsed(None, tool, fault, modern=modern)))
        final, failure = await exchange(reply, headers, body, request_id, pool, lean.upstream_id if lean else None,
                                        pass_answer=fault is None)
        seconds = time.perf_counter() - started
        if failure is not None or final is None:
            await self.gate.report(state, ruling, status="error", seconds=seconds, actual=None, kind="unavailable")
            result = text_result(f"The tool could not be reached: {failure or 'no answer'}", error=True,
                                 meta={"verdict": "allow", "decision_id": ruling.decision_id, "upstream_error": True})
            return await reply.message(response(request_id, _dump(result, modern)))
        answer: dict[str, Any] = final["result"] if isinstance(final.get("result"), dict) else {}
        is_error = answer.get("isError") is True
        await self.gate.report(state, ruling, status=outcome_status(fault, is_error=is_error), seconds=seconds,
                               actual=cost_in(answer.get("_meta")), kind="tool_error" if is_error else None)
        if fault is not None:
            return await reply.message(response(request_id, rehearsed(answer, tool, fault, modern=modern)))
        if not reply.done and not reply.streaming:
            await reply.message(final)


@dataclass(slots=True)
class _Setter:
    """Hands the agent's answer to an elicitation to the call waiting for it."""

    event: anyio.Event
    box: dict[str, Any]

    def set(self, message: Any) -> None:
        self.box["message"] = message
        self.event.set()


def _accepted(answer: Any) -> bool:
    try:
        return types.ElicitResult.model_validate(answer).action == "accept"
    except (ValueError, TypeError):
        return False


def _dump(model: Any, modern: bool) -> dict[str, Any]:
    dumped: dict[str, Any] = model.model_dump(by_alias=True, mode="json", exclude_none=True)
    if modern:
        dumped.setdefault("resultType", "complete")
    elif isinstance(model, types.CallToolResult):
        dumped.pop("resultType", None)
    return dumped
