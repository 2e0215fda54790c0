"""The lean path's plumbing: kept-alive connection pools to HTTP upstreams, and answers to the agent.

An `UpstreamPool` is one aiohttp client per HTTP upstream (every MCP session of the gateway shares
its kept-alive connections; a standalone GET stream holds one while it is open). A `Reply` is the
one HTTP response to one agent request: a single JSON body, or, once committed, an SSE stream of
events. SSE events from an upstream are read one at a time (`sse_events`), so the gateway can see
the answer to a call it forwards while passing every other event through byte for byte.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp
import anyio
from starlette.types import Receive, Send

from gatekeeper.gateway.gateway_file import Upstream

MAX_BODY = 4 * 1024 * 1024  # an agent's POST larger than this is refused (413)
_BOUNDARY = re.compile(rb"\r\n\r\n|\n\n|\r\r")
_PASSED = frozenset({"accept", "content-type", "last-event-id"})
JSON = b"application/json"
EVENT_STREAM = b"text/event-stream"


class UpstreamPool:
    """One HTTP upstream behind one kept-alive connection pool, opened in the serving event loop."""

    def __init__(self, name: str, upstream: Upstream, *, timeout: float, environ: Mapping[str, str]) -> None:
        assert upstream.url is not None
        self.name = name
        self.url = upstream.url
        self.headers = upstream.resolved_headers(environ)
        self.timeout = timeout
        self.client: aiohttp.ClientSession | None = None
        self.last_error: str | None = None

    async def open(self) -> None:
        """Create the client (no connection is made until the first request)."""
        connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=60, enable_cleanup_closed=True)
        self.client = aiohttp.ClientSession(connector=connector, auto_decompress=False, skip_auto_headers=(
            "User-Agent", "Accept-Encoding"), timeout=aiohttp.ClientTimeout(total=None, sock_connect=self.timeout))

    async def close(self) -> None:
        """Close every connection."""
        if self.client is not None:
            await self.client.close()

    def request(self, method: str, headers: Mapping[str, str], body: bytes | None = None) -> Any:
        """Return the aiohttp request context manager for one exchange with the upstream."""
        assert self.client is not None, "the pool is opened by the transport before serving"
        return self.client.request(method, self.url, headers={**headers, **self.headers}, data=body)


def upstream_headers(headers: Mapping[str, str], session_id: str | None) -> dict[str, str]:
    """Return the agent's MCP headers for the upstream: never its token or Gatekeeper headers, and the
    upstream's own session id in place of the gateway's."""
    passed = {name: value for name, value in headers.items()
              if name in _PASSED or (name.startswith("mcp-") and name != "mcp-session-id")}
    if session_id is not None:
        passed["mcp-session-id"] = session_id
    return passed


async def read_body(receive: Receive) -> bytes | None:
    """Return the request body, or None when it is larger than MAX_BODY."""
    chunks: list[bytes] = []
    size, more = 0, True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY:
            return None
        chunks.append(chunk)
        more = message.get("more_body", False)
    return b"".join(chunks)


async def sse_events(response: aiohttp.ClientResponse) -> AsyncIterator[tuple[bytes, Any]]:
    """Yield each complete SSE event of a response with its JSON `data` (None for comments or pings)."""
    buffer = b""
    async for chunk in response.content.iter_any():
        buffer += chunk
        parts = _BOUNDARY.split(buffer)
        buffer = parts.pop()
        for event in parts:
            yield event, event_data(event)


def event_data(event: bytes) -> Any:
    """Return an SSE event's `data` lines parsed as JSON, or None."""
    lines = [line[5:].lstrip(b" ") for line in event.splitlines() if line.startswith(b"data:")]
    if not lines:
        return None
    try:
        return json.loads(b"\n".join(lines))
    except ValueError:
        return None


def response(request_id: Any, result: Mapping[str, Any]) -> dict[str, Any]:
    """Return a JSON-RPC response."""
    return {"jsonrpc": "2.0", "id": request_id, "result": result}


def error(request_id: Any, code: int, message: str) -> dict[str, Any]:
    """Return a JSON-RPC error."""
    return {"jsonrpc": "2.0", "id": request_id, "error": {"code": code, "message": message}}


class Reply:
    """The one HTTP response to one agent request: a JSON body, or an SSE stream once opened."""

    def __init__(self, send: Send, headers: list[tuple[bytes, bytes]]) -> None:
        self.send = send
        self.headers = headers
        self.streaming = False
        self.started = False
        self.done = False

    async def start(self, status: int, content_type: bytes | None) -> None:
        """Send the status and headers; the body follows with `raw` and `end`."""
        headers = [*self.headers, (b"content-type", content_type)] if content_type else self.headers
        self.started = True
        await self.send({"type": "http.response.start", "status": status, "headers": headers})

    async def raw(self, data: bytes) -> None:
        """Send part of the body."""
        await self.send({"type": "http.response.body", "body": data, "more_body": True})

    async def end(self, data: bytes = b"") -> None:
        """Send the last of the body."""
        if not self.done:
            self.done = True
            await self.send({"type": "http.response.body", "body": data, "more_body": False})

    async def body(self, status: int, content_type: bytes | None, data: bytes) -> None:
        """Send a whole response."""
        await self.start(status, content_type)
        await self.end(data)

    async def open_stream(self) -> None:
        """Commit to an SSE stream (idempotent)."""
        if not self.streaming:
            self.streaming = True
            await self.start(200, EVENT_STREAM)

    async def message(self, message: Mapping[str, Any], *, status: int = 200) -> None:
        """Send one JSON-RPC message: as the JSON body, or as an event on the opened stream."""
        data = json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode()
        if self.streaming:
            await self.raw(b"event: message\r\ndata: " + data + b"\r\n\r\n")
        else:
            await self.body(status, JSON, data)

    async def event(self, event: bytes) -> None:
        """Pass one upstream SSE event through unchanged."""
        await self.raw(event + b"\r\n\r\n")


async def exchange(reply: Reply | None, headers: Mapping[str, str], body: bytes, request_id: Any, pool: UpstreamPool,
               upstream_id: str | None, *, pass_answer: bool = True) -> tuple[dict[str, Any] | None, str | None]:
    """Send one request upstream within the timeout; return (its answer, None) or (None, why it failed).

    With a `reply`, an SSE answer's other events (progress, the upstream's own requests) are passed
    through as they come, committing the reply to SSE, and then so is the answer itself unless it is
    a JSON-RPC error (a tool error instead) or `pass_answer` is False (the caller changes it). An answer
    that comes first is only returned: the caller sends it as JSON, and the agent's connection stays reusable.
    """
    try:
        with anyio.fail_after(pool.timeout):
            async with pool.request("POST", upstream_headers(headers, upstream_id),
                                    body) as upstream:
                if upstream.status >= 400:
                    return None, f"upstream {pool.name} answered HTTP {upstream.status}"
                if not upstream.headers.get("content-type", "").startswith("text/event-stream"):
                    final = json.loads(await upstream.read())
                else:
                    final, held = None, []
                    async for event, data in sse_events(upstream):
                        mine = isinstance(data, dict) and data.get("id") == request_id and "method" not in data
                        if mine and final is None:  # read on to the end: the connection goes back to the pool
                            final = data
                            if reply is not None and reply.streaming and "error" not in data and pass_answer:
                                await reply.event(event)
                        elif reply is not None and final is None:
                            held.append(event)
                            if data is not None:  # progress or a request of the upstream: stream from here on
                                await reply.open_stream()
                                for earlier in held:
                                    await reply.event(earlier)
                                held.clear()
    except TimeoutError:
        return None, f"upstream {pool.name} did not answer within {pool.timeout:g}s"
    except (aiohttp.ClientError, OSError, ValueError) as exc:
        pool.last_error = f"{type(exc).__name__}: {exc}"
        return None, f"upstream {pool.name} failed: {exc}"
    pool.last_error = None
    if isinstance(final, dict) and isinstance(final.get("error"), dict):
        return None, f"upstream {pool.name} failed: {final['error'].get('message')}"
    return (final, None) if isinstance(final, dict) else (None, f"upstream {pool.name} sent no answer")
