"""The gateway's transports: streamable HTTP for remote agents, stdio for an agent that launches it.

On HTTP every request to `/mcp` must carry `Authorization: Bearer <agent token>` (refused with 401
before MCP sees it), and `/metrics` exposes the gateway's metrics; on stdio the token comes from
`GATEKEEPER_AGENT_TOKEN`. The session asked for comes from `Gatekeeper-*` headers on HTTP and
`GATEKEEPER_*` variables on stdio (callers.py lists them: session key, environment, version, and a twin
run's seed, scenario, arm and snapshot time).

HTTP serves HTTP upstreams on the lean path (forwarding.py: uvicorn with httptools on uvloop, aiohttp
pools to the upstreams) and stdio upstreams through the SDK path (tool_calls.py), whose links run in
the same task group as the server; stdio serves everything through the SDK path.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

import anyio
import uvicorn
from mcp.server.context import ServerRequestContext
from mcp.server.stdio import stdio_server
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from gatekeeper.gateway.callers import Caller, bearer, header_caller, stdio_caller
from gatekeeper.gateway.deciding import Decider, GatekeeperError
from gatekeeper.gateway.forwarding import LeanGateway
from gatekeeper.gateway.gateway_file import GatewayFile
from gatekeeper.gateway.gateway_metrics import GatewayMetrics
from gatekeeper.gateway.relay import UpstreamPool
from gatekeeper.gateway.tool_calls import ToolGate
from gatekeeper.gateway.upstreams import UpstreamLink

IDLE_S = 1800.0  # an MCP session (or a 2026-07-28 session key) unused this long is ended


def build_links(file: GatewayFile, *, environ: Mapping[str, str] | None = None) -> dict[tuple[str, str], UpstreamLink]:
    """Return one link per agent and environment named in the gateway file."""
    return {(agent, env): UpstreamLink(f"{agent}/{env}", getattr(upstreams, env), timeout=file.timeout,
                                       environ=environ)
            for agent, upstreams in file.agents.items() for env in ("live", "twin")}


def build_pools(file: GatewayFile, *, environ: Mapping[str, str] | None = None
                ) -> dict[tuple[str, str], UpstreamPool]:
    """Return one connection pool per HTTP upstream named in the gateway file."""
    env = os.environ if environ is None else environ
    return {(agent, name): UpstreamPool(f"{agent}/{name}", upstream, timeout=file.timeout, environ=env)
            for agent, upstreams in file.agents.items()
            for name, upstream in (("live", upstreams.live), ("twin", upstreams.twin)) if upstream.url is not None}


def http_caller(ctx: ServerRequestContext[Any, Any]) -> Caller:
    """Read who is calling from the HTTP request that opened the MCP session."""
    request = ctx.request
    headers: Mapping[str, str] = request.headers if isinstance(request, Request) else {}  # case-insensitive
    return header_caller(headers)


class BearerGuard:
    """Refuse MCP requests without a valid agent token (401) before the MCP layer sees them."""

    def __init__(self, app: ASGIApp, decider: Decider, *, path: str = "/mcp") -> None:
        self.app = app
        self.decider = decider
        self.path = path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].rstrip("/") == self.path:
            headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
            token = bearer(headers.get("authorization"))
            problem = "send Authorization: Bearer <agent token>" if token is None else None
            known, agent = self.decider.cached_agent(token) if token is not None else (True, None)
            if token is not None and known and agent is None:
                problem = "unknown or revoked agent token"
            elif token is not None and not known:  # the database only on a cache miss: a thread hop per call costs
                try:
                    await anyio.to_thread.run_sync(self.decider.agent_of, token)
                except GatekeeperError as exc:
                    problem = exc.message
            if problem is not None:
                body = {"error": {"code": "unauthorized", "message": problem, "field": "authorization"}}
                await JSONResponse(body, status_code=401, headers={"WWW-Authenticate": "Bearer"})(scope, receive,
                                                                                                   send)
                return
        await self.app(scope, receive, send)


def http_app(gate: ToolGate, *, registry: CollectorRegistry, host: str,
             pools: Mapping[tuple[str, str], UpstreamPool]) -> tuple[ASGIApp, LeanGateway]:
    """Return the ASGI app (MCP at /mcp behind the bearer guard, /metrics and /healthz) and its lean path."""

    async def metrics(request: Request) -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    async def healthz(request: Request) -> Response:
        links = {link.name: link.session is not None for link in gate.links.values() if link.upstream.url is None}
        links.update({pool.name: pool.last_error is None for pool in pools.values()})
        return Response(json.dumps({"ok": True, "upstreams": links}), media_type="application/json")

    sdk = gate.server().streamable_http_app(host=host, custom_starlette_routes=[
        Route("/metrics", metrics), Route("/healthz", healthz)], session_idle_timeout=IDLE_S)
    lean = LeanGateway(gate, pools, sdk)
    return BearerGuard(lean, gate.decider), lean


def build_gate(decider: Decider, file: GatewayFile, *, registry: CollectorRegistry, stdio: bool,
               environ: Mapping[str, str] | None = None, approval_wait_s: float = 0.0, otel: bool = False
               ) -> ToolGate:
    """Wire the gate: links to every upstream, metrics on the registry, how callers are identified."""
    env = os.environ if environ is None else environ
    caller_of = (lambda ctx: stdio_caller(env)) if stdio else http_caller
    return ToolGate(decider, file, build_links(file, environ=env), metrics=GatewayMetrics(registry),
                    caller_of=caller_of, approval_wait_s=approval_wait_s, otel=otel)


async def serve_http(gate: ToolGate, *, registry: CollectorRegistry, host: str, port: int,
                     idle_s: float = IDLE_S) -> None:
    """Serve streamable HTTP until cancelled or stopped by a signal; end idle sessions as it goes."""
    pools = build_pools(gate.file)
    app, lean = http_app(gate, registry=registry, host=host, pools=pools)
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="on",
                                           http="httptools", timeout_graceful_shutdown=2))
    for pool in pools.values():
        await pool.open()
    try:
        async with anyio.create_task_group() as tasks, anyio.create_task_group() as reports:
            for link in gate.links.values():
                if link.upstream.url is None:  # HTTP upstreams are the lean path's pools
                    tasks.start_soon(link.run)
            tasks.start_soon(_expire, lean, idle_s)
            gate.background = reports
            await server.serve()
            await lean.close()
            tasks.cancel_scope.cancel()
    finally:
        gate.background = None
        await gate.db_thread.close()
        for pool in pools.values():
            await pool.close()


async def _expire(lean: LeanGateway, idle_s: float) -> None:
    while True:
        await anyio.sleep(max(0.2, min(idle_s / 4, 60.0)))
        await lean.expire_idle(idle_s)


async def serve_stdio(gate: ToolGate) -> None:
    """Serve one MCP session on stdin/stdout until the agent closes it."""
    server = gate.server()
    async with anyio.create_task_group() as tasks, anyio.create_task_group() as reports:
        for link in gate.links.values():
            tasks.start_soon(link.run)
        gate.background = reports
        async with stdio_server() as (read, write):
            await server.run(read, write, server.create_initialization_options())
        tasks.cancel_scope.cancel()
    gate.background = None
    await gate.db_thread.close()
