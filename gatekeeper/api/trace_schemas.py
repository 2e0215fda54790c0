"""Models of the session trace, `GET /v1/sessions/{session_id}`, and of an agent's session listing (SPEC §5)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from gatekeeper.api.fields import KEY_MAX, SafeStr


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
    passed: bool | None = Field(default=None, description="a twin run's verdict, fixed when it ended (null: "
                                                          "not judged)")
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


class TraceReplay(BaseModel):
    faithful: bool = Field(description="the stable version's twin run reproduced the recorded trajectory")
    divergence: int | None = Field(description="the first step (0-based) where it did not")
    detail: str


class TraceVerdict(BaseModel):
    """How an ended twin run was judged: `passed` as stored when it ended; the rest judged again on read."""

    passed: bool | None = Field(description="as fixed when the run ended (null: not judged)")
    problems: list[str] = Field(description="the scenario's assertions the run breaks, judged from its calls "
                                            "against the scenario as the policy has it now")
    replay: TraceReplay | None = Field(default=None, description="for the stable version's run of a scenario "
                                                                 "recorded from a live stable session")


class SessionTrace(Trace):
    """A session's trace; for half of a mirrored pair, both halves side by side in `mirror`."""

    mirror: MirroredTraces | None = Field(default=None, description="present when the session is half of a "
                                                                    "mirrored pair (shadow stage)")
    verdict: TraceVerdict | None = Field(default=None, description="present for a twin run that has ended")


class SessionQuery(BaseModel):
    """Filters and cursor of `GET /v1/agents/{agent}/sessions`."""

    model_config = ConfigDict(extra="forbid")
    limit: int = Field(default=50, ge=1, le=500)
    before: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_-]{1,40}$",
                               description="a session id of this agent: list the sessions that started before it "
                                           "(the `next` of the previous page)")
    environment: Literal["live", "twin"] | None = None
    arm: Literal["candidate", "stable"] | None = None
    status: Literal["open", "ok", "error", "abandoned"] | None = None
    scenario: SafeStr | None = Field(default=None, min_length=1, max_length=KEY_MAX)


class SessionPage(BaseModel):
    """One page of an agent's sessions, newest first."""

    items: list[TraceSession]
    limit: int
    next: str | None = Field(description="the session id to pass as `before` for the next page; null: no more. "
                                         "With filters a page may hold fewer than `limit` sessions and still "
                                         "have one")
