"""The lean path for streamable HTTP: decide `tools/call` in the path, stream everything else through.

The agent's POST body is parsed as JSON-RPC and nothing more. A `tools/call` is decided (the same
`ToolGate` session and verdict logic as the SDK path) and, when allowed, its original body is sent
to the upstream over a kept-alive pool and the upstream's answer streamed back event by event
while the gateway reads the result for the outcome it reports. `initialize` is passed through
and the upstream's `Mcp-Session-Id` mapped to one the gateway issues; `tools/list` is passed
through with the tools this stage never allows marked; every other request, notification, the
agent's answers to upstream requests, GET streams and DELETE go through untouched. Messages the
gateway builds itself (tool errors, elicitation, InputRequiredResult) are the mcp SDK's types.

Agents whose upstream is a command (stdio), or who are not in the gateway file, are served by the
SDK path (`fallback`), which terminates MCP on both sides.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import anyio
import mcp_types as types
from mcp.shared.exceptions import MCPError
from mcp_types import CLIENT_CAPABILITIES_META_KEY, INTERNAL_ERROR, INVALID_PARAMS, INVALID_REQUEST, PARSE_ERROR
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from starlette.types import ASGIApp, Receive, Scope, Send

from gatekeeper.gateway.deciding import GatekeeperError, Ruling
from gatekeeper.gateway.relay import JSON, Reply, UpstreamPool, error, read_body, response, sse_events, upstream_headers
from gatekeeper.gateway.tool_calls import (
    APPROVAL_INPUT,
    Caller,
    SessionState,
    ToolGate,
    approval_question,
    cost_in,
    text_result,
)

ELICIT_WAIT_S = 600.0  # how long a mid-call elicitation waits for the agent's answer
SESSION_KEY, ENVIRONMENT, VERSION = "gatekeeper-session-key", "gatekeeper-environment", "gatekeeper-version"
_NOT_FOUND = json.dumps(error(None, INVALID_REQUEST, "Session not found")).encode()


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


def bearer(header: str | None) -> str | None:
    """Return the token of an `Authorization: Bearer` header."""
    scheme, _, token = (header or "").strip().partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


class LeanGateway:
    """The ASGI app at /mcp for agents whose upstreams are HTTP; everything else goes to `fallback`."""

    def __init__(self, gate: ToolGate, pools: Mapping[tuple[str, str], UpstreamPool], fallback: ASGIApp, *,
                 path: str = "/mcp") -> None:
        self.gate = gate
        self.pools = pools
        self.fallback = fallback
        self.path = path
        self.sessions: dict[str, LeanSession] = {}
        self._ids = itertools.count(1)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].rstrip("/") != self.path:
            return await self.fallback(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        caller = Caller(bearer(headers.get("authorization")), headers.get(SESSION_KEY) or None,
                        headers.get(ENVIRONMENT) or "live", headers.get(VERSION) or None)
        known, agent = self.gate.decider.cached_agent(caller.token or "")
        if not known and caller.token:
            try:
                agent = await anyio.to_thread.run_sync(self.gate.decider.agent_of, caller.token)
            except GatekeeperError:
                agent = None
        pool = self.pools.get((agent or "", "twin" if caller.environment == "twin" else "live"))
        if pool is None:  # a stdio upstream, or an agent the SDK path refuses with its reason
            return await self.fallback(scope, receive, send)
        method = scope["method"]
        if method == "POST":
            return await self._post(receive, send, headers, caller, pool)
        sid = headers.get("mcp-session-id")
        lean = self.sessions.get(sid or "")
        if lean is None or lean.caller != caller:
            return await Reply(send, []).body(404 if sid else 400, JSON, _NOT_FOUND)
        if method == "GET":
            return await self._stream(receive, send, headers, lean)
        if method == "DELETE":
            return await self._delete(send, headers, sid or "")
        await Reply(send, [(b"allow", b"GET, POST, DELETE")]).body(405, None, b"")

    # -- POST ------------------------------------------------------------------------------

    async def _post(self, receive: Receive, send: Send, headers: dict[str, str], caller: Caller,
                    pool: UpstreamPool) -> None:
        body = await read_body(receive)
        if body is None:
            return await Reply(send, []).body(413, None, b"")
        try:
            message = json.loads(body)
        except ValueError:
            return await Reply(send, []).message(error(None, PARSE_ERROR, "Parse error"), status=400)
        modern = headers.get("mcp-protocol-version") in MODERN_PROTOCOL_VERSIONS
        sid = None if modern else headers.get("mcp-session-id")
        lean = self.sessions.get(sid) if sid else None
        if sid and (lean is None or lean.caller != caller):
            return await Reply(send, []).body(404, JSON, _NOT_FOUND)
        reply = Reply(send, [(b"mcp-session-id", sid.encode())] if sid else [])
        if lean is not None:
            lean.last_used = time.monotonic()
        messages = message if isinstance(message, list) else [message]
        if any(not isinstance(m, dict) or m.get("method") == "tools/call" for m in messages):
            if isinstance(message, dict) and "id" in message:
                return await self._call(reply, headers, body, message, caller, pool, lean, modern)
            return await reply.message(error(None, INVALID_REQUEST, "tools/call must be one request with an id"),
                                       status=400)
        method = message.get("method") if isinstance(message, dict) else None
        try:
            if method == "initialize" and lean is None and not modern:
                return await self._initialize(send, headers, body, message, caller, pool)
            if method == "tools/list" and (lean is not None or modern):
                return await self._list(reply, headers, body, message, await self._state(caller, lean, modern),
                                        pool, lean)
        except MCPError as exc:
            return await reply.message(error(message.get("id"), exc.error.code, exc.error.message))
        if method is None and lean is not None and isinstance(message, dict) and \
                str(message.get("id")) in lean.pending:  # the agent's answer to the gateway's elicitation
            lean.pending.pop(str(message.get("id"))).set(message)
            return await reply.body(202, None, b"")
        await self._pass(reply, "POST", headers, body, lean, pool)

    async def _pass(self, reply: Reply, method: str, headers: Mapping[str, str], body: bytes | None,
                    lean: LeanSession | None, pool: UpstreamPool) -> None:
        """Stream one exchange through to the upstream and back, untouched."""
        try:
            async with pool.request(method, upstream_headers(headers, lean.upstream_id if lean else None),
                                    body) as upstream:
                await reply.start(upstream.status, upstream.headers.get("content-type", "").encode() or None)
                async for chunk in upstream.content.iter_any():
                    await reply.raw(chunk)
                await reply.end()
        except (aiohttp.ClientError, OSError) as exc:
            pool.last_error = f"{type(exc).__name__}: {exc}"
            if not reply.done:
                await reply.body(502, JSON, json.dumps(error(None, INTERNAL_ERROR, f"upstream {pool.name} failed: "
                                                                                   f"{exc}")).encode())

    async def _initialize(self, send: Send, headers: Mapping[str, str], body: bytes, message: dict[str, Any],
                          caller: Caller, pool: UpstreamPool) -> None:
        """Pass initialize through; remember the upstream's session under an id the gateway issues."""
        params: dict[str, Any] = message["params"] if isinstance(message.get("params"), dict) else {}
        capabilities: dict[str, Any] = params["capabilities"] if isinstance(params.get("capabilities"), dict) else {}
        reply = Reply(send, [])
        try:
            with anyio.fail_after(pool.timeout):
                async with pool.request("POST", upstream_headers(headers, None), body) as upstream:
                    data = await upstream.read()
                    upstream_id, status = upstream.headers.get("mcp-session-id"), upstream.status
                    content_type = upstream.headers.get("content-type", "").encode() or None
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            pool.last_error = f"{type(exc).__name__}: {exc}"
            return await reply.message(error(message.get("id"), INTERNAL_ERROR, f"upstream {pool.name} failed: {exc}"))
        if status == 200:
            sid = secrets.token_urlsafe(18)
            self.sessions[sid] = LeanSession(caller, pool, upstream_id, capabilities.get("elicitation") is not None)
            reply.headers = [(b"mcp-session-id", sid.encode())]
        await reply.body(status, content_type, data)

    async def _state(self, caller: Caller, lean: LeanSession | None, modern: bool) -> SessionState:
        """Return the Gatekeeper session of the request, opening it at the first one that needs it."""
        if modern or lean is None:
            return await self.gate.envelope_state(caller)  # MCPError without a session key
        if lean.state is None:
            async with self.gate.opening:
                if lean.state is None:
                    lean.state = SessionState(await self.gate.open_session(caller))
        return lean.state

    async def _list(self, reply: Reply, headers: Mapping[str, str], body: bytes, message: dict[str, Any],
                    state: SessionState, pool: UpstreamPool, lean: LeanSession | None) -> None:
        """Pass tools/list through, marking the tools this session's stage never allows or asks approval for."""
        final, failure = await self._exchange(None, headers, body, message.get("id"), pool, lean)
        if failure is not None or final is None:
            return await reply.message(error(message.get("id"), INTERNAL_ERROR, failure or "no answer"))
        tools = (final.get("result") or {}).get("tools")
        if isinstance(tools, list):
            decider, opened = self.gate.decider, state.opened
            policy = await anyio.to_thread.run_sync(decider.policy, opened.agent)
            for tool in tools:
                if isinstance(tool, dict) and isinstance(tool.get("name"), str):
                    never = decider.never_allowed(policy, opened, tool["name"])
                    if never is not None:
                        _mark(tool, "gatekeeper/never_allowed", never, never)
                    elif decider.needs_approval(policy, opened, tool["name"]):
                        _mark(tool, "gatekeeper/approval_required", "each call waits for a person's approval",
                              "true")
        await reply.message(final)

    # -- tools/call ------------------------------------------------------------------------

    async def _call(self, reply: Reply, headers: Mapping[str, str], body: bytes, message: dict[str, Any],
                    caller: Caller, pool: UpstreamPool, lean: LeanSession | None, modern: bool) -> None:
        request_id = message["id"]
        params: dict[str, Any] = message["params"] if isinstance(message.get("params"), dict) else {}
        tool, arguments = params.get("name"), params.get("arguments") or {}
        if not isinstance(tool, str) or not isinstance(arguments, dict) or (lean is None and not modern):
            problem = "a tools/call needs params.name and object params.arguments" if lean or modern else \
                "no MCP session: initialize first"
            return await reply.message(error(request_id, INVALID_PARAMS, problem), status=400)
        try:
            state = await self._state(caller, lean, modern)
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
                await self._forward(reply, headers, body, request_id, state, ruling, pool, lean, modern)
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

    async def _forward(self, reply: Reply, headers: Mapping[str, str], body: bytes, request_id: Any,
                       state: SessionState, ruling: Ruling, pool: UpstreamPool, lean: LeanSession | None,
                       modern: bool) -> None:
        """Send the allowed call's own body upstream, stream the answer back, and report its outcome."""
        started = time.perf_counter()
        final, failure = await self._exchange(reply, headers, body, request_id, pool, lean)
        seconds = time.perf_counter() - started
        if failure is not None or final is None:
            await self.gate.report(state, ruling, status="error", seconds=seconds, actual=None, kind="unavailable")
            result = text_result(f"The tool could not be reached: {failure or 'no answer'}", error=True,
                                 meta={"verdict": "allow", "decision_id": ruling.decision_id, "upstream_error": True})
            return await reply.message(response(request_id, _dump(result, modern)))
        answer: dict[str, Any] = final["result"] if isinstance(final.get("result"), dict) else {}
        is_error = answer.get("isError") is True
        await self.gate.report(state, ruling, status="error" if is_error else "ok", seconds=seconds,
                               actual=cost_in(answer.get("_meta")), kind="tool_error" if is_error else None)
        if not reply.done and not reply.streaming:
            await reply.message(final)

    async def _exchange(self, reply: Reply | None, headers: Mapping[str, str], body: bytes, request_id: Any,
                        pool: UpstreamPool, lean: LeanSession | None) -> tuple[dict[str, Any] | None, str | None]:
        """Send one request upstream within the timeout; return (its answer, None) or (None, why it failed).

        With a `reply`, an SSE answer's other events (progress, the upstream's own requests) are passed
        through as they come, and so is the answer itself unless it is a JSON-RPC error (a tool error
        instead). Without one, the answer is only returned.
        """
        try:
            with anyio.fail_after(pool.timeout):
                async with pool.request("POST", upstream_headers(headers, lean.upstream_id if lean else None),
                                        body) as upstream:
                    if upstream.status >= 400:
                        return None, f"upstream {pool.name} answered HTTP {upstream.status}"
                    if not upstream.headers.get("content-type", "").startswith("text/event-stream"):
                        final = json.loads(await upstream.read())
                    else:
                        final = None
                        async for event, data in sse_events(upstream):
                            mine = isinstance(data, dict) and data.get("id") == request_id and "method" not in data
                            if reply is not None and not (mine and "error" in data):
                                await reply.open_stream()
                                await reply.event(event)
                            if mine:
                                final = data
                                break
        except TimeoutError:
            return None, f"upstream {pool.name} did not answer within {pool.timeout:g}s"
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            pool.last_error = f"{type(exc).__name__}: {exc}"
            return None, f"upstream {pool.name} failed: {exc}"
        pool.last_error = None
        if isinstance(final, dict) and isinstance(final.get("error"), dict):
            return None, f"upstream {pool.name} failed: {final['error'].get('message')}"
        return (final, None) if isinstance(final, dict) else (None, f"upstream {pool.name} sent no answer")

    # -- GET streams, DELETE, idle sessions --------------------------------------------------

    async def _stream(self, receive: Receive, send: Send, headers: Mapping[str, str], lean: LeanSession) -> None:
        """Pass a standalone GET stream through until the agent or the upstream closes it."""
        reply = Reply(send, [])
        async with anyio.create_task_group() as tasks:
            lean.streams.add(tasks.cancel_scope)

            async def disconnected() -> None:
                while (await receive())["type"] != "http.disconnect":
                    pass
                tasks.cancel_scope.cancel()

            tasks.start_soon(disconnected)
            try:
                await self._pass(reply, "GET", headers, None, lean, lean.pool)
            finally:
                lean.streams.discard(tasks.cancel_scope)
                tasks.cancel_scope.cancel()
        if reply.started and not reply.done:  # the session ended under the stream: close it cleanly
            with anyio.CancelScope(shield=True), contextlib.suppress(Exception):
                await reply.end()

    async def _delete(self, send: Send, headers: Mapping[str, str], sid: str) -> None:
        """End the MCP session: its Gatekeeper session, its streams, and the upstream's session."""
        await self.end(sid, headers)
        await Reply(send, []).body(200, None, b"")

    async def end(self, sid: str, headers: Mapping[str, str] | None = None) -> None:
        """End one lean session (DELETE or idle): the upstream's session, its streams, its Gatekeeper session."""
        lean = self.sessions.pop(sid, None)
        if lean is None:
            return
        for scope in list(lean.streams):
            scope.cancel()
        with anyio.CancelScope(shield=True):
            if lean.upstream_id is not None:
                with anyio.move_on_after(lean.pool.timeout):
                    try:
                        async with lean.pool.request("DELETE", upstream_headers(headers or {}, lean.upstream_id)):
                            pass
                    except (aiohttp.ClientError, OSError):
                        pass
            if lean.state is not None:
                await self.gate.closed(lean.state)

    async def expire_idle(self, idle_s: float) -> int:
        """End the sessions no request used for idle_s; return how many."""
        cutoff = time.monotonic() - idle_s
        idle = [sid for sid, lean in self.sessions.items() if lean.last_used < cutoff and not lean.pending]
        for sid in idle:
            await self.end(sid)
        return len(idle) + await self.gate.expire_idle(idle_s)

    async def close(self) -> None:
        """End every session (the gateway is stopping)."""
        for sid in list(self.sessions):
            await self.end(sid)


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


def _mark(tool: dict[str, Any], key: str, note: str, value: str) -> None:
    tool["description"] = f"{tool.get('description') or ''}\n[gatekeeper: {note}]".strip()
    tool["_meta"] = {**(tool.get("_meta") or {}), key: value}
