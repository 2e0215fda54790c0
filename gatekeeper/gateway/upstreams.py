"""Long-lived client sessions to the upstream MCP servers, one per agent and environment.

Each `UpstreamLink` owns one `ClientSession` in its own task (anyio scopes must be left by the task
that entered them), shared by every MCP session of the gateway: JSON-RPC multiplexes concurrent
calls, so a thousand agents cost one upstream connection. A link that breaks reconnects with
backoff; a call that cannot be answered within the gateway file's timeout is an error, never a hang.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from contextlib import AsyncExitStack
from typing import Any

import anyio
import httpx2
import mcp_types as types
from mcp import ClientSession, StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client

from gatekeeper.gateway.gateway_file import Upstream

log = logging.getLogger(__name__)


class UpstreamUnavailable(Exception):
    """The upstream could not be reached or did not answer in time."""


class UpstreamLink:
    """One upstream server behind one shared client session, reconnected when it breaks."""

    def __init__(self, name: str, upstream: Upstream, *, timeout: float, environ: Mapping[str, str] | None = None
                 ) -> None:
        self.name = name
        self.upstream = upstream
        self.timeout = timeout
        self.environ = os.environ if environ is None else environ
        self.session: ClientSession | None = None
        self._ready = anyio.Event()
        self._broken = anyio.Event()
        self.last_error = ""

    async def run(self) -> None:
        """Keep the link connected until cancelled; reconnect with backoff after a failure."""
        delay = 0.1
        while True:
            try:
                async with AsyncExitStack() as stack:
                    self.session = await self._connect(stack)
                    self._broken = anyio.Event()
                    self._ready.set()
                    delay = 0.1
                    await self._broken.wait()
            except Exception as exc:  # noqa: BLE001 - any transport failure means: reconnect
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.warning("upstream %s (%s) failed: %s", self.name, self.upstream.describe(), self.last_error)
            self.session = None
            self._ready = anyio.Event()
            await anyio.sleep(delay)
            delay = min(delay * 2, 5.0)

    async def _connect(self, stack: AsyncExitStack) -> ClientSession:
        up = self.upstream
        if up.url is not None:
            client = httpx2.AsyncClient(headers=up.resolved_headers(self.environ),
                                        timeout=httpx2.Timeout(self.timeout, read=max(self.timeout, 300.0)))
            await stack.enter_async_context(client)
            streams = await stack.enter_async_context(streamable_http_client(up.url, http_client=client))
            read, write = streams[0], streams[1]
        else:
            params = StdioServerParameters(command=up.command or "", args=up.args, env=up.resolved_env(self.environ),
                                           cwd=up.cwd)
            read, write = await stack.enter_async_context(stdio_client(params))
        session = await stack.enter_async_context(ClientSession(read, write))
        with anyio.fail_after(self.timeout):
            await session.initialize()
        return session

    async def _session(self) -> ClientSession:
        try:
            with anyio.fail_after(self.timeout):
                await self._ready.wait()
        except TimeoutError:
            raise UpstreamUnavailable(f"upstream {self.name} is not connected ({self.last_error or 'connecting'})"
                                      ) from None
        assert self.session is not None
        return self.session

    async def call(self, tool: str, arguments: Mapping[str, Any] | None) -> types.CallToolResult:
        """Forward one tools/call; UpstreamUnavailable when it fails or times out."""
        session = await self._session()
        try:
            with anyio.fail_after(self.timeout):
                return await session.call_tool(tool, dict(arguments or {}))
        except TimeoutError:
            raise UpstreamUnavailable(f"upstream {self.name} did not answer within {self.timeout:g}s") from None
        except anyio.ClosedResourceError as exc:
            self._broken.set()
            raise UpstreamUnavailable(f"upstream {self.name} closed the connection") from exc
        except Exception as exc:  # an MCPError from the upstream, or a broken transport
            raise UpstreamUnavailable(f"upstream {self.name} failed: {exc}") from exc

    async def list_tools(self) -> list[types.Tool]:
        """Return every tool of the upstream (all pages)."""
        session = await self._session()
        tools: list[types.Tool] = []
        cursor: str | None = None
        try:
            with anyio.fail_after(self.timeout):
                while True:
                    paging = types.PaginatedRequestParams(cursor=cursor) if cursor else None
                    page = await session.list_tools(params=paging)
                    tools.extend(page.tools)
                    cursor = page.next_cursor
                    if not cursor:
                        return tools
        except TimeoutError:
            raise UpstreamUnavailable(f"upstream {self.name} did not list its tools within {self.timeout:g}s"
                                      ) from None
        except Exception as exc:
            raise UpstreamUnavailable(f"upstream {self.name} failed to list its tools: {exc}") from exc
