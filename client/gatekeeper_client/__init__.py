"""Gatekeeper's Python SDK: ask before every tool call of an AI agent; sync (`Gatekeeper`) and asyncio
(`AsyncGatekeeper`) clients with one surface, guarded tools declared once and bound per run.

    from gatekeeper_client import AsyncGatekeeper, guarded

    @guarded("search_kb", cost=0.002, read_only=True)
    async def search_kb(query: str) -> list[str]: ...

    gk = AsyncGatekeeper("http://127.0.0.1:8000", token)
    async with gk.session("support-bot", session_key=conversation_id):
        pages = await search_kb("refund policy")
"""

from __future__ import annotations

from gatekeeper_client._client import AsyncGatekeeper, AsyncSession, Gatekeeper, Session, current_session
from gatekeeper_client.errors import (
    BadRequest,
    Conflict,
    Denied,
    Forbidden,
    GatekeeperError,
    NotApproved,
    NotExecuted,
    NotFound,
    PayloadTooLarge,
    Shadowed,
    ToolError,
    ToolFailure,
    ToolTimeout,
    Unauthorized,
    Unavailable,
    Unreachable,
)
from gatekeeper_client.guard import GuardedTool, NoSession, guarded
from gatekeeper_client.models import Chaos, Decision, Mirror, Refusal

__all__ = [
    "AsyncGatekeeper", "AsyncSession", "BadRequest", "Chaos", "Conflict", "Decision", "Denied", "Forbidden",
    "Gatekeeper", "GatekeeperError", "GuardedTool", "Mirror", "NoSession", "NotApproved", "NotExecuted", "NotFound",
    "PayloadTooLarge", "Refusal", "Session", "Shadowed", "ToolError", "ToolFailure", "ToolTimeout", "Unauthorized",
    "Unavailable", "Unreachable", "current_session", "guarded",
]
