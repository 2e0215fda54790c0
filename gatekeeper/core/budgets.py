"""Budget math: caps fixed when a session starts, money in integer micro-dollars.

A session's caps come from the policy once, at start: canary or expansion caps for a
candidate session, canary caps for twin and shadow sessions (permission parity: the twin
and the shadow see what canary would enforce), `stable_caps` for stable sessions.
The reservation itself is one conditional database statement; here is only arithmetic.
"""

from __future__ import annotations

import math

from gatekeeper.core.policy import MICROS_PER_DOLLAR, Caps, Policy

MAX_COST_DOLLARS = 10_000.0  # one tool call estimated above this is a bug in the caller, not a plan


def caps_for(policy: Policy, *, arm: str, stage: str | None) -> Caps:
    """Return the caps a session gets at start."""
    if arm == "stable":
        return policy.stable_caps
    return policy.expansion.caps if stage == "expansion" else policy.canary.caps


def to_micros(dollars: float) -> int:
    """Convert a dollar amount to micro-dollars, refusing negative, non-finite or absurd amounts."""
    if not math.isfinite(dollars) or dollars < 0 or dollars > MAX_COST_DOLLARS:
        raise ValueError(f"must be a finite amount between 0 and {MAX_COST_DOLLARS:g} dollars")
    return round(dollars * MICROS_PER_DOLLAR)


def to_dollars(micros: int) -> float:
    """Convert micro-dollars to dollars."""
    return micros / MICROS_PER_DOLLAR


def cap_reason(caps: Caps, *, tool_calls: int, spend_micros: int, cost_micros: int) -> str:
    """Return the reason code of the cap one more call of this cost would break, or ''."""
    if tool_calls >= caps.tool_calls_per_session:
        return "cap_tool_calls"
    if spend_micros + cost_micros > caps.spend_per_session_micros:
        return "cap_spend"
    return ""


def remaining(caps: Caps, *, tool_calls: int, spend_micros: int) -> tuple[int, int]:
    """Return the calls and micro-dollars left under the caps (never negative)."""
    return (max(caps.tool_calls_per_session - tool_calls, 0),
            max(caps.spend_per_session_micros - spend_micros, 0))
