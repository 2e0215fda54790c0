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
import json
import secrets
import time
from collections.abc import Mapping
from typing import Any

import aiohttp
import anyio
from mcp.shared.exceptions import MCPError
from mcp_types import INTERNAL_ERROR, INVALID_REQUEST, PARSE_ERROR
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from starlette.types import ASGIApp, Receive, Scope, Send

from gatekeeper.gateway.callers import Caller, header_caller
from gatekeeper.gateway.deciding import GatekeeperError
from gatekeeper.gateway.in_path import InPath, LeanSession
from gatekeeper.gateway.relay import JSON, Reply, UpstreamPool, error, exchange, read_body, upstream_headers
from gatekeeper.gateway.tool_calls import SessionState, ToolGate

_NOT_FOUND = json.dumps(error(None, INVALID_REQUEST, "Session not found")).encode()


class LeanGateway:
    """The ASGI app at /mcp for agents whose upstreams are HTTP; everything else goes to `fallback`."""

    def __init__(self, gate: ToolGate, pools: Mapping[tuple[str, str], UpstreamPool], fallback: ASGIApp, *,
                 path: str = "/mcp") -> None:
        self.gate = gate
        self.pools = pools
        self.fallback = fallback
        self.path = path
        self.sessions: dict[str, LeanSession] = {}
        self.in_path = InPath(gate)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].rstrip("/") != self.path:
            return await self.fallback(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        caller = header_caller(headers)
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
                return await self.in_path.call(reply, headers, body, message, caller, pool, lean, modern)
            return await reply.message(error(None, INVALID_REQUEST, "tools/call must be one request with an id"),
                                       status=400)
        method = message.get("method") if isinstance(message, dict) else None
        try:
            if method == "initialize" and lean is None and not modern:
                return await self._initialize(send, headers, body, message, caller, pool)
            if method == "tools/list" and (lean is not None or modern):
                return await self._list(reply, headers, body, message, await self.in_path.state(caller, lean, modern),
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

    async def _list(self, reply: Reply, headers: Mapping[str, str], body: bytes, message: dict[str, Any],
                    state: SessionState, pool: UpstreamPool, lean: LeanSession | None) -> None:
        """Pass tools/list through, marking the tools this session's stage never allows or asks approval for."""
        final, failure = await exchange(None, headers, body, message.get("id"), pool,
                                        lean.upstream_id if lean else None)
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
        with anyio.CancelScope(shield=True):
            if lean.upstream_id is not None:  # the upstream ends its own streams: they close cleanly here too
                with anyio.move_on_after(lean.pool.timeout):
                    try:
                        async with lean.pool.request("DELETE", upstream_headers(headers or {}, lean.upstream_id)):
                            pass
                    except (aiohttp.ClientError, OSError):
                        pass
            for scope in list(lean.streams):  # whatever the upstream left open
                scope.cancel()
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


def _mark(tool: dict[str, Any], key: str, note: str, value: str) -> None:
    tool["description"] = f"{tool.get('description') or ''}\n[gatekeeper: {note}]".strip()
    tool["_meta"] = {**(tool.get("_meta") or {}), key: value}
