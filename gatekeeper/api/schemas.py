"""Request and response models of the release-manager API. They, not the tables, are the contract."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from gatekeeper.api.fields import INT_MAX, KEY_MAX, REASON_MAX, SafeStr
from gatekeeper.core.vocabulary import Stage

SLUG = r"^[a-z0-9][a-z0-9-]{0,62}$"
VERSION = r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,99}$"


class Strict(BaseModel):
    """A request body: unknown fields are refused."""

    model_config = ConfigDict(extra="forbid")


class AgentCreate(Strict):
    name: str = Field(pattern=SLUG, description="agent slug")
    policy: SafeStr = Field(min_length=1, max_length=KEY_MAX, description="name of a loaded policy")
    stable_version: str | None = Field(default=None, pattern=VERSION)


class RolloutCreate(Strict):
    version: str = Field(pattern=VERSION, description="the candidate version label")
    reason: SafeStr = Field(default="", max_length=REASON_MAX)


class StableBody(Strict):
    version: str = Field(pattern=VERSION, description="the version live traffic gets by default")
    reason: SafeStr = Field(min_length=1, max_length=1000, description="why; kept in the audit trail")


class StableChangeView(BaseModel):
    agent: str
    from_version: str | None
    to_version: str
    actor: str
    reason: str
    at: datetime
    status: AgentStatus


class ActionBody(Strict):
    reason: SafeStr = Field(min_length=1, max_length=REASON_MAX, description="why; kept in the audit trail")


class PromoteBody(ActionBody):
    full: bool = Field(default=False, description="complete the rollout at once (100%)")


class RollbackBody(ActionBody):
    to_stage: Stage | None = Field(default=None, description="roll back to this stage; default one tier")


class HistoryQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")
    limit: int = Field(default=50, ge=1, le=500)
    offset: int = Field(default=0, ge=0, le=INT_MAX)
    kind: Literal["all", "transition", "gate_evaluation"] = "all"


class RolloutView(BaseModel):
    id: int
    candidate_version: str
    stable_version: str | None
    stage: str
    tier: int
    tier_label: str
    traffic_percent: float
    state: str
    state_reason: str
    tier_started_at: datetime
    started_at: datetime
    updated_at: datetime
    ended_at: datetime | None
    kill_switch_open: bool
    policy_revision: str


class AgentStatus(BaseModel):
    name: str
    policy: str
    policy_revision: str | None
    policy_file: str | None
    stable_version: str | None
    rollout: RolloutView | None
    ladder: list[str] = Field(description="labels of every tier: twin, shadow, canary 1%, ...")
    allowed_actions: list[str]
    gate_report: dict[str, Any] | None = Field(description="the newest gate evaluation of the rollout")
    pending_approvals: int = 0


StableChangeView.model_rebuild()


class TierView(BaseModel):
    """Where a rollout stood: a stage, its tier and the rollout's state there."""

    stage: str | None
    tier: int | None
    state: str | None
    label: str | None = Field(default=None, description="the tier as every view names it: canary 25%")


class HistoryEntry(BaseModel):
    kind: Literal["transition", "gate_evaluation"]
    id: int
    rollout_id: int
    at: datetime
    actor: str
    action: str
    reason: str
    from_: TierView | None = Field(alias="from", serialization_alias="from")
    to: TierView
    traffic_percent: float | None = None
    policy_revision: str
    metrics: dict[str, Any]
    candidate_version: str | None = Field(default=None, description="the candidate of the rollout this step is of")


class HistoryPage(BaseModel):
    items: list[HistoryEntry]
    total: int
    limit: int
    offset: int


class TransitionView(BaseModel):
    agent: str
    transition: HistoryEntry
    status: AgentStatus


class Health(BaseModel):
    status: str
    checks: dict[str, str] = {}


def utc(value: float) -> datetime:
    """Render a stored epoch float as an aware UTC datetime."""
    return datetime.fromtimestamp(value, tz=UTC)


def timestamp(value: float | None) -> datetime | None:
    """Render an optional stored epoch float as an aware UTC datetime."""
    return None if value is None else utc(value)
