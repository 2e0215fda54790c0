"""Response models of the session trace, `GET /v1/sessions/{session_id}` (SPEC §5)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field


class TraceOutcome(BaseModel):
    status: str = Field(description="ok or error, as the agent reported it")
    actual_cost: float | None = Field(description="dollars")
    overrun: float | None = Field(description="dollars the actual cost went above the reservation, if any")
    latency_ms: float | None
    at: datetime | None


class TraceDecision(BaseModel):
    decision_id: str
    at: datetime
    tool: str
    tool_class: str
    verdict: str
    reason: str
    would_verdict: str | None = Field(description="for a shadowed call: what the verdict would have been")
    would_reason: str | None
    cost: float = Field(description="the estimate in dollars, reserved when the call may run")
    preview: str | None
    arguments: dict[str, Any] | None = Field(description="the call's arguments, the policy's redacted fields masked")
    arguments_digest: str | None = Field(description="SHA-256 of the unredacted canonical arguments")
    approval_id: str | None
    approval_state: str | None = Field(default=None, description="pending, approved, rejected, expired or cancelled")
    outcome: TraceOutcome | None = Field(description="absent until the agent reports the call's outcome")


class TraceSession(BaseModel):
    session_id: str
    agent: str
    version: str
    arm: str
    stage: str | None
    environment: str
    scenario: str | None
    status: str
    tool_calls: int
    spend: float = Field(description="dollars reserved and settled")
    cap_tool_calls: int
    cap_spend: float = Field(description="dollars")
    started_at: datetime
    ended_at: datetime | None
    mirror_of: str | None = Field(description="for the candidate's shadow session: the stable session it mirrors")


class Trace(BaseModel):
    session: TraceSession
    decisions: list[TraceDecision]


class MirroredTraces(BaseModel):
    stable: Trace
    candidate: Trace


class SessionTrace(Trace):
    """A session's trace; for half of a mirrored pair, both halves side by side in `mirror`."""

    mirror: MirroredTraces | None = Field(default=None, description="present when the session is half of a "
                                                                    "mirrored pair (shadow stage)")
