"""Bounded field types for every request model: what the edge accepts is what the tables can hold.

A string never carries a NUL character (Postgres refuses them in text) and is never longer than
the narrowest column it lands in; an integer fits the 32-bit columns and offsets it feeds; a
timestamp is any date from year 1 to 9999, aware or naive (naive means UTC), normalised to UTC.
Each bound shows in the model's JSON Schema, so `/openapi.json` says exactly what is accepted.

    from gatekeeper.api.fields import INT_MAX, REASON_MAX, SafeStr

    class Body(Strict):
        reason: SafeStr = Field(min_length=1, max_length=REASON_MAX)
        offset: int = Field(default=0, ge=0, le=INT_MAX)
        request_id: SafeStr | None = Field(default=None, min_length=1, max_length=100)  # Decision.request_id
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from pydantic import AfterValidator, Field

# No NUL and nothing else: the bound on length is each field's own.
NO_NUL = r"^[^\x00]*$"
INT_MAX = 2**31 - 1  # the largest value of a 32-bit INTEGER column, the narrowest we write
REASON_MAX = 500  # a reason lands in Rollout.state_reason (500) and Transition.reason (1000)
DECISION_REASON_MAX = 1000  # an approver's reason lands in Approval.decision_reason (1000)
KEY_MAX = 200  # session_key, scenario, policy: AgentSession/Agent columns of 200
LABEL_NAME_MAX = 100
LABEL_VALUE_MAX = 1000
ANNOTATION_MAX = 10_000


# A string without NUL characters; bound its length where used: `reason: SafeStr = Field(max_length=...)`.
SafeStr = Annotated[str, Field(pattern=NO_NUL)]


def _utc(value: datetime) -> datetime:
    aware = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    try:
        return aware.astimezone(UTC)
    except OverflowError:
        raise ValueError("is outside the years 1 to 9999 once converted to UTC") from None


# Aware or naive (taken as UTC), any year from 1 to 9999; always an aware UTC datetime after parsing.
Timestamp = Annotated[datetime, AfterValidator(_utc)]


def nul_free_json(value: object) -> object:
    """Return a parsed JSON value unchanged, or raise ValueError if any key or string in it has a NUL.

    For free-form objects (a decision's `arguments`): `Annotated[dict[str, Any], AfterValidator(nul_free_json)]`.
    """
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str) and "\x00" in item:
            raise ValueError("must not contain a NUL character")
        if isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return value


__all__ = ["ANNOTATION_MAX", "DECISION_REASON_MAX", "INT_MAX", "KEY_MAX", "LABEL_NAME_MAX", "LABEL_VALUE_MAX",
           "NO_NUL", "REASON_MAX", "SafeStr", "Timestamp", "nul_free_json"]
