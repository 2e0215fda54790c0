"""Request and response models of the agent-runtime and approval routes (SPEC §5).

Sizes are bounded here, so bad input is refused before anything is read or reserved:
costs are finite dollars in [0, 10,000], previews at most 1,000 characters, ids at most 40,
no string carries a NUL and none is longer than its column (gatekeeper/api/fields.py);
arguments a JSON object of at most 16 KiB as canonical JSON with no NUL in any key or string,
request ids at most 100 printable ASCII characters.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

from gatekeeper.api.fields import DECISION_REASON_MAX, KEY_MAX, SafeStr, Timestamp, nul_free_json
from gatekeeper.api.schemas import SLUG, Strict
from gatekeeper.core.arguments import check_size
from gatekeeper.core.budgets import MAX_COST_DOLLARS
from gatekeeper.core.chaos import Fault
from gatekeeper.core.vocabulary import ApprovalState, Arm, Environment, VerdictName

ID = Field(min_length=1, max_length=40, pattern=r"^[A-Za-z0-9_-]+$")
ID_OR_NONE = Field(default=None, min_length=1, max_length=40, pattern=r"^[A-Za-z0-9_-]+$")
TOOL = r"^[A-Za-z0-9_.:/-]{1,200}$"
MAX_PREVIEW = 1000
MAX_REQUEST_ID = 100
MAX_LATENCY_MS = 86_400_000.0  # a day: anything longer is a unit mistake
MAX_SEED = 100  # sessions.seed


def _money(description: str, **default: Any) -> Any:
    return Field(ge=0, le=MAX_COST_DOLLARS, allow_inf_nan=False, description=description, **default)


class SessionCreate(Strict):
    agent: str = Field(pattern=SLUG)
    session_key: SafeStr | None = Field(default=None, min_length=1, max_length=KEY_MAX,
                                    description="sticky assignment key; random when absent")
    environment: Environment = "live"
    scenario: SafeStr | None = Field(default=None, min_length=1, max_length=KEY_MAX,
                                 description="twin scenario whose trajectory assertions this run checks")
    twin_snapshot_at: Timestamp | None = Field(default=None, description="when the twin's data snapshot was taken; "
                                                                          "naive means UTC, years 1 to 9999")
    seed: SafeStr | None = Field(default=None, min_length=1, max_length=MAX_SEED,
                                 description="twin sessions: the seed of the rehearsed failures (stages.twin.chaos); "
                                             "the same seed injects the same failures; default: the session id")
    arm: Arm | None = Field(
        default=None, description="twin only: 'stable' runs the stable version in the twin, to measure the twin's "
                                  "fidelity against scenarios recorded in production; default the candidate")


class CapsView(BaseModel):
    tool_calls: int
    spend: float = Field(description="dollars")


class MirrorView(BaseModel):
    session_id: str
    version: str


class SessionView(BaseModel):
    session_id: str
    agent: str
    version: str
    arm: Arm
    stage: str | None
    environment: Environment
    caps: CapsView
    mirror: MirrorView | None = Field(default=None, description="present when the candidate must shadow this "
                                                                "session: run it with this session id")
    seed: str | None = Field(default=None, description="twin sessions: the seed of the rehearsed failures; start "
                                                       "another session with it to meet the same failures")


class DecisionCreate(Strict):
    session_id: str = ID
    tool: str = Field(pattern=TOOL)
    cost: float = _money("estimated cost in dollars, reserved atomically")
    preview: SafeStr | None = Field(default=None, max_length=MAX_PREVIEW, description="shown to approvers")
    approval_id: str | None = ID_OR_NONE
    arguments: Annotated[dict[str, Any], AfterValidator(nul_free_json)] | None = Field(
        default=None, description="the JSON object the tool will be called with, at most 16 KiB as canonical JSON; "
                                  "an approval binds exactly these arguments")
    request_id: str | None = Field(
        default=None, min_length=1, max_length=MAX_REQUEST_ID, pattern=r"^[\x20-\x7e]+$",
        description="the caller's key for this call: a retry with the same request_id in the same session gets "
                    "the first answer back and reserves nothing again (so the repeat after an approval, a new "
                    "request, needs a new request_id)")

    @field_validator("arguments")
    @classmethod
    def _bounded(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None:
            check_size(value)
        return value


class Remaining(BaseModel):
    tool_calls: int
    spend: float = Field(description="dollars")


class ChaosView(BaseModel):
    """A rehearsed failure (stages.twin.chaos): wait `delay_ms`, then apply `fault`.

    error: do not call the tool; hand the agent a tool error (report the outcome as an error).
    timeout: call the tool (its side effect happens), then hand the agent a timeout (report an error outcome).
    partial / malformed: call the tool; hand the agent its result truncated / garbled (report the outcome ok).
    """

    fault: Fault | None
    delay_ms: int = Field(ge=0, description="milliseconds to wait before the call")


class DecisionView(BaseModel):
    decision_id: str
    verdict: VerdictName
    reason: str
    message: str = Field(description="one plain sentence an agent can hand back to its model")
    remaining: Remaining
    approval_id: str | None = None
    chaos: ChaosView | None = Field(
        default=None, description="present on an allowed call of a candidate's twin session: the failure to "
                                  "rehearse (null: none); absent otherwise")


class OutcomeCreate(Strict):
    status: Literal["ok", "error"]
    actual_cost: float | None = _money("actual cost in dollars; default: the estimate", default=None)
    latency_ms: float | None = Field(default=None, ge=0, le=MAX_LATENCY_MS, allow_inf_nan=False)


class OutcomeView(BaseModel):
    decision_id: str
    status: str
    actual_cost: float
    latency_ms: float | None
    kill_switch_tripped: bool = Field(description="this report tripped the kill switch")
    overrun: float = Field(default=0.0, description="dollars the actual cost exceeded the reservation by")


class SessionEnd(Strict):
    status: Literal["ok", "error", "abandoned"] = "ok"
    passed: bool | None = Field(default=None, description="the test harness's own verdict (twin scenarios)")


class ReplayView(BaseModel):
    faithful: bool = Field(description="the stable version's twin run reproduced the recorded production trajectory")
    divergence: int | None = Field(description="the first divergent step, 0-based")
    detail: str


class Trajectory(BaseModel):
    passed: bool
    problems: list[str]
    replay: ReplayView | None = Field(default=None, description="stable twin runs of a scenario recorded live "
                                                                "from stable: whether the twin is faithful")


class SessionSummary(BaseModel):
    session_id: str
    agent: str
    version: str
    arm: str
    stage: str | None
    environment: str
    scenario: str | None
    status: str
    passed: bool | None
    tool_calls: int
    spend: float
    caps: CapsView
    decisions: dict[str, int] = Field(description="number of decisions by verdict")
    trajectory: Trajectory | None
    started_at: datetime
    ended_at: datetime | None


class ApprovalView(BaseModel):
    approval_id: str
    agent: str
    session_id: str
    version: str
    tool: str
    tool_class: str
    cost: float = Field(description="dollars")
    preview: str | None
    stage: str | None = Field(description="the rollout's stage when the call was asked")
    arguments: dict[str, Any] | None = Field(description="the call's arguments, the policy's redact fields masked")
    state: ApprovalState
    used: bool
    created_at: datetime
    expires_at: datetime
    decided_by: str | None
    decided_at: datetime | None
    decision_reason: str | None


class ApprovalAction(Strict):
    reason: SafeStr = Field(default="", max_length=DECISION_REASON_MAX)


class ApprovalQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")
    state: ApprovalState | Literal["all"] = "pending"
