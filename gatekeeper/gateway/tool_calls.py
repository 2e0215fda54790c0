"""The gateway's MCP server side: every tools/call decided in the path, tools/list passed through.

One MCP session is one Gatekeeper session, opened at its first request from who is calling and the
session they ask for (callers.py: headers on HTTP, environment variables on stdio; a twin session's
seed, scenario, arm and snapshot time), and ended when the MCP session closes, a scenario run then
judged. The 2026-07-28 protocol has no MCP session (each request is its own exchange), so there the
session key is required and names the Gatekeeper session with the other fields.

A candidate that must shadow a live session connects with the same session key and
`Gatekeeper-Version: <candidate version>`: its calls are decided in the mirror session, so they are
recorded as shadow and never reach an upstream.

Verdicts: `allow` is forwarded to the session's upstream (twin sessions reach only the twin) and its
outcome reported; `shadow` answers that the call was recorded; `deny` is a tool error carrying the
decision's message; `approval_required` asks through elicitation when the client offers it (and
runs the call once a person approved), else it is a tool error naming the approval. Elicitation
works on both protocol versions, as the SDK's resolve/elicit pattern does: a mid-call
`elicitation/create` request up to 2025-11-25, and on 2026-07-28 (no back-channel) an
`InputRequiredResult` whose answer comes back with the client's retry of the same call. The same
call (tool and arguments) sent again carries that approval, so it runs once when approved.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import anyio
import mcp_types as types
from anyio.abc import TaskGroup
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel import Server
from mcp.shared.exceptions import MCPError
from mcp_types import INTERNAL_ERROR, INVALID_REQUEST
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

from gatekeeper.gateway.callers import Caller
from gatekeeper.gateway.db_thread import DatabaseThread, log_failure
from gatekeeper.gateway.deciding import Decider, GatekeeperError, Opened, Policy, Ruling
from gatekeeper.gateway.gateway_file import GatewayFile
from gatekeeper.gateway.gateway_metrics import GatewayMetrics
from gatekeeper.gateway.rehearsal import delayed, outcome_status, rehearsed
from gatekeeper.gateway.upstreams import UpstreamLink, UpstreamUnavailable

COST_META_KEYS = ("gatekeeper/actual_cost", "cost")  # where an upstream may report a call's actual cost
APPROVAL_POLL_S = 0.2
MAX_WAITING_MIRRORS = 10_000  # mirrors whose candidate has not connected yet; the oldest are forgotten first
MAX_ENVELOPE_SESSIONS = 10_000  # 2026-07-28 sessions kept by key; the least recently used are forgotten first
APPROVAL_INPUT = "gatekeeper_approval"  # the key of the approval question in an InputRequiredResult
# An approval that can no longer be spent: the same call asks a person again at once (a rejection stands).
SPENT_APPROVALS = ("approval_expired", "approval_cancelled", "approval_used")


@dataclass
class SessionState:
    """What the gateway keeps per MCP session: its Gatekeeper session and approvals asked in it."""

    opened: Opened
    approvals: dict[tuple[str, str], str] = field(default_factory=dict)  # (tool, arguments) -> approval id
    reporting: list[anyio.Event] = field(default_factory=list)  # outcomes still being written
    judging: list[anyio.Event] = field(default_factory=list)  # those the next decision must see (errors, costs)
    last_used: float = field(default_factory=time.monotonic)

    @property
    def writing(self) -> bool:
        """Return whether an outcome of this session is still being written (written ones stay listed)."""
        return not all(event.is_set() for event in self.reporting)

    async def reported(self, *, judged_only: bool = False) -> None:
        """Wait until the outcomes of this session's earlier calls are written (only those a decision reads)."""
        waiting = self.judging if judged_only else self.reporting
        while waiting:
            await waiting[0].wait()
            waiting.pop(0)


def _arguments_key(tool: str, arguments: Mapping[str, Any] | None) -> tuple[str, str]:
    return tool, json.dumps(arguments or {}, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def text_result(text: str, *, error: bool, meta: dict[str, Any]) -> types.CallToolResult:
    return types.CallToolResult(content=[types.TextContent(type="text", text=text)], is_error=error,
                                _meta={"gatekeeper": meta})


class ToolGate:
    """The gateway's handlers: sessions, tools/list and tools/call, over shared upstream links."""

    def __init__(self, decider: Decider, file: GatewayFile, links: Mapping[tuple[str, str], UpstreamLink], *,
                 metrics: GatewayMetrics, caller_of: Callable[[ServerRequestContext[Any, Any]], Caller],
                 approval_wait_s: float = 0.0, otel: bool = False) -> None:
        self.decider = decider
        self.file = file
        self.links = links
        self.metrics = metrics
        self.caller_of = caller_of
        self.approval_wait_s = approval_wait_s
        self.otel = otel
        self.mirrors: dict[tuple[str, str], tuple[str, str]] = {}  # (agent, session key) -> (mirror id, version)
        self.envelopes: dict[tuple[Any, ...], SessionState] = {}  # 2026-07-28: sessions by caller
        self.opening = anyio.Lock()
        self.background: TaskGroup | None = None  # set by the transport: outcomes are written after the answer
        self.db_thread = DatabaseThread(threads=decider.threads)  # decisions and outcomes (db_thread.py)

    def server(self) -> Server[Any]:
        """Return the lowlevel MCP server answering with these handlers."""
        server: Server[Any] = Server("gatekeeper-gateway", version="1", on_list_tools=self.list_tools,
                                     on_call_tool=self.call_tool)
        if not self.otel:  # the SDK's OpenTelemetry span per message costs CPU on every call even unexported
            server.middleware = []
        return server

    # -- sessions --------------------------------------------------------------------------

    async def state(self, ctx: ServerRequestContext[Any, Any]) -> SessionState:
        """Return the MCP session's state, opening its Gatekeeper session at the first request."""
        if ctx.protocol_version in MODERN_PROTOCOL_VERSIONS:
            return await self.envelope_state(self.caller_of(ctx))
        connection = ctx.session._connection  # noqa: SLF001 - the SDK's per-connection scratch state
        found: SessionState | None = connection.state.get("gatekeeper")
        if found is not None:
            return found
        async with self.opening:
            found = connection.state.get("gatekeeper")
            if found is None:
                found = connection.state["gatekeeper"] = SessionState(await self.open_session(self.caller_of(ctx)))
                connection.exit_stack.push_async_callback(self.closed, found)
        return found

    async def envelope_state(self, caller: Caller) -> SessionState:
        if not caller.session_key:
            raise refused("the 2026-07-28 protocol has no MCP session: send Gatekeeper-Session-Key to name the "
                          "Gatekeeper session these calls belong to")
        key = dataclasses.astuple(caller)  # token, key, environment, version and the twin run's own
        found = self.envelopes.pop(key, None)
        if found is None:
            async with self.opening:
                found = self.envelopes.pop(key, None) or SessionState(await self.open_session(caller))
        found.last_used = time.monotonic()
        self.envelopes[key] = found  # most recently used last
        if len(self.envelopes) > MAX_ENVELOPE_SESSIONS:
            self._end_soon(self.envelopes.pop(next(iter(self.envelopes))))
        return found

    async def expire_idle(self, idle_s: float) -> int:
        """End the 2026-07-28 sessions unused for idle_s (their pending approvals are cancelled); return how many."""
        cutoff = time.monotonic() - idle_s
        idle = [key for key, state in self.envelopes.items() if state.last_used < cutoff and not state.writing]
        for key in idle:
            await self.closed(self.envelopes.pop(key))
        return len(idle)

    def _end_soon(self, state: SessionState) -> None:
        if self.background is not None:
            self.background.start_soon(self.closed, state)

    async def open_session(self, caller: Caller) -> Opened:
        if caller.token is None:
            raise refused("no agent token: send Authorization: Bearer <agent token>")
        try:
            return await self._open_as(await anyio.to_thread.run_sync(self.decider.agent_of, caller.token), caller)
        except GatekeeperError as exc:
            raise refused(f"the gatekeeper refused the session: {exc.message}") from None

    async def _open_as(self, agent: str, caller: Caller) -> Opened:
        if agent not in self.file.agents:
            raise refused(f"agent {agent!r} has no upstreams in the gateway file")
        joined = self.mirrors.get((agent, caller.session_key)) if caller.session_key else None
        if joined is not None and caller.version == joined[1]:  # the candidate joins; anyone else leaves it waiting
            del self.mirrors[(agent, caller.session_key or "")]
            opened = await anyio.to_thread.run_sync(self.decider.mirror, agent, joined[0], joined[1])
        else:
            opened = await anyio.to_thread.run_sync(lambda: self.decider.open(
                agent, session_key=caller.session_key, environment=caller.environment, seed=caller.seed,
                scenario=caller.scenario, arm=caller.arm, snapshot_at=caller.snapshot_at))
            if opened.mirror_id and opened.mirror_version and caller.session_key:
                if len(self.mirrors) >= MAX_WAITING_MIRRORS:
                    self.mirrors.pop(next(iter(self.mirrors)))
                self.mirrors[(agent, caller.session_key)] = (opened.mirror_id, opened.mirror_version)
        self.metrics.sessions.labels(agent, opened.environment).inc()
        return opened

    async def closed(self, state: SessionState) -> None:
        with anyio.CancelScope(shield=True):
            await state.reported()
            await anyio.to_thread.run_sync(self.decider.close, state.opened.session_id, state.opened.agent)

    # -- tools/list ------------------------------------------------------------------------

    async def list_tools(self, ctx: ServerRequestContext[Any, Any], params: types.PaginatedRequestParams | None
                         ) -> types.ListToolsResult:
        """Pass the upstream's tools through, marking those this session's stage can never allow."""
        state = await self.state(ctx)
        link = self._link(state.opened)
        try:
            tools = await link.list_tools()
        except UpstreamUnavailable as exc:
            raise MCPError(INTERNAL_ERROR, str(exc)) from None
        policy = await anyio.to_thread.run_sync(self.decider.policy, state.opened.agent)
        return types.ListToolsResult(tools=[self.marked(tool, policy, state.opened) for tool in tools])

    def marked(self, tool: types.Tool, policy: Policy, opened: Opened) -> types.Tool:
        """Mark a tool this stage never allows, or one whose calls wait for a person's approval."""
        never = self.decider.never_allowed(policy, opened, tool.name)
        if never is not None:
            key, note, value = "gatekeeper/never_allowed", never, never
        elif self.decider.needs_approval(policy, opened, tool.name):
            key, note, value = "gatekeeper/approval_required", "each call waits for a person's approval", "true"
        else:
            return tool
        description = f"{tool.description or ''}\n[gatekeeper: {note}]".strip()
        return tool.model_copy(update={"description": description, "meta": {**(tool.meta or {}), key: value}})

    # -- tools/call ------------------------------------------------------------------------

    async def call_tool(self, ctx: ServerRequestContext[Any, Any], params: types.CallToolRequestParams
                        ) -> types.CallToolResult | types.InputRequiredResult:
        """Decide the call, then forward, record, refuse or ask for approval by its verdict."""
        state = await self.state(ctx)
        tool, arguments = params.name, params.arguments or {}
        ruling = await self.rule(state, tool, arguments)
        if ruling.verdict == "approval_required":
            if ctx.protocol_version in MODERN_PROTOCOL_VERSIONS:
                asked = await self._input_required(ctx, params, state, ruling)
                if isinstance(asked, types.InputRequiredResult):
                    return asked
                ruling = asked
            else:
                ruling = await self._wait_for_approval(ctx, state, ruling, tool, arguments)
        self.ruled(state, tool, arguments, ruling)
        if ruling.verdict == "allow":
            return await self._forward(state, ruling, tool, arguments)
        return self.answer(ruling)

    async def rule(self, state: SessionState, tool: str, arguments: Mapping[str, Any]) -> Ruling:
        """Decide a call in its session, carrying the approval granted to the same call (tool and arguments)."""
        # The kill switch and caps judge this call after the session's earlier errors and actual costs; an ok
        # outcome without a cost changes nothing a decision reads, so the next call does not wait for it.
        await state.reported(judged_only=True)
        state.last_used = time.monotonic()
        key = _arguments_key(tool, arguments)
        ruling = await self.decide(state.opened, tool, arguments, approval_id=state.approvals.get(key))
        if ruling.reason in SPENT_APPROVALS:
            state.approvals.pop(key, None)
            ruling = await self.decide(state.opened, tool, arguments, approval_id=None)
        if ruling.verdict == "approval_required":
            state.approvals[key] = ruling.approval_id or ""
        return ruling

    def ruled(self, state: SessionState, tool: str, arguments: Mapping[str, Any], ruling: Ruling) -> None:
        """Spend an approval that let the call through, and count the final verdict."""
        if ruling.approval_id and ruling.verdict == "allow":
            state.approvals.pop(_arguments_key(tool, arguments), None)  # the same call again needs a new approval
        self.metrics.calls.labels(state.opened.agent, state.opened.environment, ruling.verdict).inc()

    @staticmethod
    def answer(ruling: Ruling) -> types.CallToolResult:
        """Return the result of a call that does not run: shadow (recorded), deny or approval_required."""
        meta = {"verdict": ruling.verdict, "reason": ruling.reason, "decision_id": ruling.decision_id}
        if ruling.approval_id:
            meta["approval_id"] = ruling.approval_id
        if ruling.verdict == "shadow":
            return text_result(f"Recorded, not run: {ruling.message}", error=False, meta=meta)
        return text_result(ruling.message, error=True, meta=meta)

    async def decide(self, opened: Opened, tool: str, arguments: Mapping[str, Any], *,
                      approval_id: str | None) -> Ruling:
        try:
            return await self.db_thread.run(lambda: self.decider.decide(opened, tool, arguments,
                                                                        approval_id=approval_id))
        except GatekeeperError as exc:
            raise refused(f"the gatekeeper refused the call: {exc.message}") from None

    async def _input_required(self, ctx: ServerRequestContext[Any, Any], params: types.CallToolRequestParams,
                              state: SessionState, ruling: Ruling) -> Ruling | types.InputRequiredResult:
        """2026-07-28: ask in an InputRequiredResult; on the retry carrying the answer, decide again."""
        answer = (params.input_responses or {}).get(APPROVAL_INPUT)
        if answer is None:
            if not _can_elicit(ctx):
                return ruling
            request = types.ElicitRequest(params=types.ElicitRequestFormParams(
                message=approval_question(ruling, params.name), requested_schema={"type": "object", "properties": {}}))
            return types.InputRequiredResult(input_requests={APPROVAL_INPUT: request},
                                             request_state=json.dumps({"approval_id": ruling.approval_id}))
        if not isinstance(answer, types.ElicitResult) or answer.action != "accept":
            return ruling
        await self.settled(ruling.approval_id or "")
        return await self.decide(state.opened, params.name, params.arguments or {}, approval_id=ruling.approval_id)

    async def _wait_for_approval(self, ctx: ServerRequestContext[Any, Any], state: SessionState, ruling: Ruling,
                                 tool: str, arguments: Mapping[str, Any]) -> Ruling:
        """Ask through elicitation (when offered) and decide again once the approval is settled."""
        approval_id = ruling.approval_id or ""
        if not _can_elicit(ctx):
            return ruling
        answer = await ctx.session.elicit_form(approval_question(ruling, tool), {"type": "object", "properties": {}},
                                               related_request_id=ctx.request_id)
        if answer.action != "accept":
            return ruling
        await self.settled(approval_id)
        return await self.decide(state.opened, tool, arguments, approval_id=approval_id)

    async def settled(self, approval_id: str) -> None:
        deadline = time.monotonic() + self.approval_wait_s
        while True:
            found = await anyio.to_thread.run_sync(self.decider.approval_state, approval_id)
            if found != "pending" or time.monotonic() >= deadline:
                return
            await anyio.sleep(APPROVAL_POLL_S)

    async def _forward(self, state: SessionState, ruling: Ruling, tool: str, arguments: Mapping[str, Any]
                       ) -> types.CallToolResult:
        link = self._link(state.opened)
        started = time.perf_counter()
        fault = await delayed(ruling, agent=state.opened.agent, metrics=self.metrics)  # a twin's (rehearsal.py)
        if fault == "error":  # not forwarded
            await self.report(state, ruling, status="error", seconds=time.perf_counter() - started, actual=None,
                              kind=None, upstream=False)
            return types.CallToolResult.model_validate(rehearsed(None, tool, fault, modern=False))
        try:
            result = await link.call(tool, arguments)
        except UpstreamUnavailable as exc:
            await self.report(state, ruling, status="error", seconds=time.perf_counter() - started, actual=None,
                               kind="unavailable")
            return text_result(f"The tool could not be reached: {exc}", error=True,
                                meta={"verdict": "allow", "decision_id": ruling.decision_id, "upstream_error": True})
        await self.report(state, ruling, status=outcome_status(fault, is_error=result.is_error),
                          seconds=time.perf_counter() - started, actual=cost_in(result.meta),
                          kind="tool_error" if result.is_error else None)
        if fault is None:
            return result
        dumped = result.model_dump(by_alias=True, mode="json", exclude_none=True)
        return types.CallToolResult.model_validate(rehearsed(dumped, tool, fault, modern=False))

    async def report(self, state: SessionState, ruling: Ruling, *, status: str, seconds: float,
                      actual: float | None, kind: str | None, upstream: bool = True) -> None:
        """Count the upstream's answer (when it was asked) and write the outcome: after the answer when it may."""
        opened = state.opened
        name = f"{opened.agent}/{'twin' if opened.environment == 'twin' else 'live'}"
        if upstream:
            self.metrics.upstream_latency.labels(name).observe(seconds)
        if kind is not None:
            self.metrics.upstream_errors.labels(name, kind).inc()
        report: Callable[[], bool] = lambda: self.decider.report(  # noqa: E731
            ruling, opened.agent, status=status, latency_ms=seconds * 1000, actual_cost=actual)
        if self.background is None:
            await self._write(report, ruling)
            return
        done = anyio.Event()
        state.reporting = [*(e for e in state.reporting if not e.is_set()), done]  # written ones are dropped
        if status != "ok" or actual is not None:
            state.judging = [*(e for e in state.judging if not e.is_set()), done]
        self.db_thread.submit(report, what=f"report the outcome of decision {ruling.decision_id}", done=done.set)

    async def _write(self, report: Callable[[], bool], ruling: Ruling) -> None:
        try:
            with anyio.CancelScope(shield=True):  # an acknowledged call's outcome is never dropped at shutdown
                await self.db_thread.run(report)
        except Exception as exc:  # noqa: BLE001 - logged as a write after the answer is
            log_failure(f"report the outcome of decision {ruling.decision_id}", exc)

    def _link(self, opened: Opened) -> UpstreamLink:
        return self.links[(opened.agent, "twin" if opened.environment == "twin" else "live")]


def refused(message: str) -> MCPError:
    """Return the JSON-RPC error the client sees for a request the gateway cannot serve (its message kept)."""
    return MCPError(INVALID_REQUEST, message)


def approval_question(ruling: Ruling, tool: str) -> str:
    return (f"{ruling.message} ({tool}; approval {ruling.approval_id}). Accept once a person has approved it in "
            "Gatekeeper to run the call now; decline to drop it.")


def _can_elicit(ctx: ServerRequestContext[Any, Any]) -> bool:
    capabilities = ctx.session.client_capabilities
    return capabilities is not None and capabilities.elicitation is not None


def cost_in(meta: Mapping[str, Any] | None) -> float | None:
    """Return the actual cost an upstream reported in a result's `_meta`, if any."""
    for key in COST_META_KEYS:
        value = (meta or {}).get(key)
        if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
            return float(value)
    return None
