"""The values the SDK hands back: one set, shared by the sync and the async client."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

Verdict = Literal["allow", "shadow", "deny", "approval_required"]
OnRefusal = Literal["raise", "return"]
APPROVAL_STATES = ("pending", "approved", "rejected", "expired", "cancelled")


@dataclass(frozen=True)
class Chaos:
    """A failure to rehearse on an allowed call of a twin session: wait `delay_ms`, then apply `fault`.

    `fault`: None (only the delay), "error" (the tool is not called: ToolError), "timeout" (the tool is called,
    then ToolTimeout: its effect happened), "partial" or "malformed" (the tool is called, its result damaged).
    """

    fault: str | None
    delay_ms: int = 0

    @classmethod
    def from_answer(cls, found: dict[str, Any] | None) -> Chaos | None:
        """Build it from a decision answer's `chaos` (null or absent: nothing to rehearse)."""
        if not found:
            return None
        return cls(found.get("fault"), int(found.get("delay_ms") or 0))


@dataclass(frozen=True)
class Decision:
    """The server's verdict on one tool call; `offline` when the SDK decided alone (server unreachable)."""

    decision_id: str | None
    verdict: str
    reason: str = ""
    message: str = ""  # one plain sentence an agent can hand back to its model
    remaining_tool_calls: int | None = None
    remaining_spend: float | None = None
    approval_id: str | None = None
    request_id: str | None = None
    offline: bool = False
    chaos: Chaos | None = None  # twin sessions: the failure to rehearse on this call

    @property
    def allowed(self) -> bool:
        """Return whether the tool may run."""
        return self.verdict == "allow"

    @classmethod
    def from_answer(cls, answer: dict[str, Any], *, request_id: str | None = None) -> Decision:
        """Build a decision from the answer of POST /v1/decisions."""
        remaining = answer.get("remaining") or {}
        return cls(answer["decision_id"], answer["verdict"], answer.get("reason", ""), answer.get("message", ""),
                   remaining.get("tool_calls"), remaining.get("spend"), answer.get("approval_id"), request_id,
                   chaos=Chaos.from_answer(answer.get("chaos")))


UNREACHABLE_MESSAGE = ("Gatekeeper cannot be reached, so only read-only tools may run now; "
                       "this call did not run, try again later.")


def offline_decision(*, allowed: bool) -> Decision:
    """Return the SDK's own verdict when the server cannot be reached."""
    if allowed:
        return Decision(None, "allow", "unreachable", "The call may run (read-only, Gatekeeper unreachable).",
                        offline=True)
    return Decision(None, "deny", "unreachable", UNREACHABLE_MESSAGE, offline=True)


class Refusal(str):
    """What a guarded tool returns instead of running, with `on_refusal="return"`: the plain message, as a str.

    A framework passes it to the model like any tool result; code can still read `.decision`.
    """

    decision: Decision
    tool: str

    def __new__(cls, decision: Decision, tool: str) -> Refusal:
        made = super().__new__(cls, decision.message or f"{tool} did not run: {decision.verdict}")
        made.decision, made.tool = decision, tool
        return made

    @property
    def verdict(self) -> str:
        """Return the verdict that stopped the call."""
        return self.decision.verdict


@dataclass(frozen=True)
class Mirror:
    """The candidate's mirror of a live session, named by the server while the candidate is in shadow."""

    session_id: str
    version: str
