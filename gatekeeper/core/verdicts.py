"""The verdict on one tool call: stage x tool class x sequence rules x approvals x kill switch.

Free functions over values, tested as tables; the adapter gathers the facts, asks `judge`,
makes the atomic cap reservation when the verdict says so, and asks `after_reservation`.

Verdicts (SPEC §2):
- allow: execute the call. A twin session executes against the twin; canary and expansion
  candidates and stable sessions execute live. Caps are reserved atomically first.
- shadow: the shadow candidate does not execute; the call is recorded with what caps, rules
  and approvals would have said (`would_verdict`, `would_reason`) for the shadow gate.
- deny: do not execute; `reason` says why (kill switch, sequence rule, cap, approval state).
- approval_required: a person must approve first; the adapter opens an approval.

The candidate's stage for a call is its session's role: the twin's rules (canary's, executed
against the twin) for twin sessions, `shadow` for mirrors (a mirror never acts live, whatever
the rollout does later), otherwise the rollout's current stage, so that a rollback takes
effect on running sessions at once; a live candidate call at twin is a mistake (`twin_only`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

from gatekeeper.core.policy import Policy
from gatekeeper.core.sequence import sequence_reason

APPROVAL_STATES = ("pending", "approved", "rejected", "expired", "used")


@dataclass(frozen=True)
class Call:
    """The facts one verdict depends on, gathered by the adapter."""

    arm: str  # candidate | stable
    environment: str  # live | twin
    mirror: bool  # a shadow mirror of a stable session
    rollout_stage: str | None  # the rollout's current stage
    rollout_state: str | None
    tool: str
    tool_class: str
    ran: Mapping[str, int]  # past calls that ran, for the sequence rules' tools
    approval: str | None = None  # state of the approval sent with the call, if any
    cap_reason: str = ""  # the cap the counters read so far say this call would break, if any


@dataclass(frozen=True)
class Verdict:
    """A verdict, its reason code, and what the adapter must still do."""

    verdict: str
    reason: str = ""
    reserve: bool = False  # take one call and the cost from the caps, atomically
    consume_approval: bool = False
    open_approval: bool = False
    would_verdict: str | None = None
    would_reason: str | None = None


ALLOW = Verdict("allow", reserve=True)


def judge(policy: Policy, call: Call) -> Verdict:
    """Return the verdict before the cap reservation."""
    if call.arm == "stable" or call.rollout_state == "completed":
        return _rules(policy, call, approval_classes=())
    if call.rollout_state == "killed":
        return Verdict("deny", "kill_switch")
    if call.rollout_state not in ("progressing", "held", "paused"):
        return Verdict("deny", "rollout_inactive")
    stage = effective_stage(call)
    if stage == "shadow":
        return _shadow(policy, call)
    if stage == "twin_session":
        return _rules(policy, call, approval_classes=policy.canary.approval_required)
    if stage in ("canary", "expansion"):
        tier_stage = policy.canary if stage == "canary" else policy.expansion
        return _rules(policy, call, approval_classes=tier_stage.approval_required)
    return Verdict("deny", "twin_only")


def effective_stage(call: Call) -> str | None:
    """Return the stage whose rules govern this call: `twin_session`, `shadow`, or the rollout's."""
    if call.arm == "candidate" and call.environment == "twin":
        return "twin_session"
    if call.arm == "candidate" and call.mirror:
        return "shadow"
    return call.rollout_stage


def after_reservation(verdict: Verdict, *, reserved: bool, cap_reason: str) -> Verdict:
    """Return the final verdict once the atomic reservation succeeded or failed."""
    if reserved or not verdict.reserve:
        return verdict
    if verdict.verdict == "shadow":
        return replace(verdict, reserve=False, would_verdict="deny", would_reason=cap_reason)
    return Verdict("deny", cap_reason)


def _rules(policy: Policy, call: Call, *, approval_classes: tuple[str, ...]) -> Verdict:
    """Sequence rules, then approvals, then caps: the canary permission set."""
    reason = sequence_reason(policy.sequence_rules, call.tool, call.ran)
    if reason:
        return Verdict("deny", reason)
    if call.tool_class in approval_classes:
        return _approval(call)
    return ALLOW


def _approval(call: Call) -> Verdict:
    """A class that needs a person: open an approval, wait for it, or spend it once."""
    if call.approval is None:
        if call.cap_reason:  # no person should approve a call the caps will refuse anyway
            return Verdict("deny", call.cap_reason)
        return Verdict("approval_required", "approval_required", open_approval=True)
    if call.approval == "pending":
        return Verdict("approval_required", "approval_pending")
    if call.approval == "approved":
        return Verdict("allow", reserve=True, consume_approval=True)
    return Verdict("deny", f"approval_{call.approval}")


def _shadow(policy: Policy, call: Call) -> Verdict:
    """Shadow: run the classes in `shadow.execute`, record the rest with what canary would say."""
    would = _rules(policy, replace(call, approval=None), approval_classes=policy.canary.approval_required)
    if call.tool_class in policy.shadow.execute:  # approvals are canary's; shadow asks nobody
        return ALLOW if would.verdict == "approval_required" else would
    if would.verdict == "deny":
        return Verdict("shadow", "shadow", would_verdict="deny", would_reason=would.reason)
    if would.verdict == "approval_required":
        return Verdict("shadow", "shadow", would_verdict="approval_required", would_reason="approval_required")
    return Verdict("shadow", "shadow", reserve=True, would_verdict="allow", would_reason="")
