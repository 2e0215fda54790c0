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
from typing import NamedTuple

from gatekeeper.core.budgets import to_dollars
from gatekeeper.core.policy import BeforeRule, Caps, MaxCallsRule, Policy
from gatekeeper.core.sequence import sequence_reason
from gatekeeper.core.vocabulary import APPROVAL_STATES, LIVE_STATES, ToolClass

# What an approval sent with a repeated call can be: its stored state, `used` once spent, and
# `changed` when the call's arguments are not the ones it was asked (and approved) for.
CALL_APPROVAL_STATES = (*APPROVAL_STATES, "used", "changed")


class Call(NamedTuple):
    """The facts one verdict depends on, gathered by the adapter (a tuple: built per decision)."""

    arm: str  # an Arm: candidate | stable (read from the session's row)
    environment: str  # an Environment: live | twin
    mirror: bool  # a shadow mirror of a stable session
    rollout_stage: str | None  # the rollout's current stage
    rollout_state: str | None
    tool: str
    tool_class: ToolClass
    ran: Mapping[str, int]  # past calls that ran, for the sequence rules' tools
    approval: str | None = None  # state of the approval sent with the call, if any (CALL_APPROVAL_STATES)
    cap_reason: str = ""  # the cap the counters read so far say this call would break, if any


@dataclass(frozen=True)
class Verdict:
    """A verdict, its reason code, and what the adapter must still do."""

    verdict: str  # a VerdictName (core/vocabulary.py); replays read it back from the stored decision
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
    if call.rollout_state not in LIVE_STATES:
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
    if call.approval == "changed":  # a different call than the one approved: a person must see this one
        if call.cap_reason:
            return Verdict("deny", call.cap_reason)
        return Verdict("approval_required", "approval_arguments_changed", open_approval=True)
    if call.approval == "pending":
        return Verdict("approval_required", "approval_pending")
    if call.approval == "approved":
        return Verdict("allow", reserve=True, consume_approval=True)
    return Verdict("deny", f"approval_{call.approval}")


def _shadow(policy: Policy, call: Call) -> Verdict:
    """Shadow: run the classes in `shadow.execute`, record the rest with what canary would say."""
    would = _rules(policy, call._replace(approval=None), approval_classes=policy.canary.approval_required)
    if call.tool_class in policy.shadow.execute:  # approvals are canary's; shadow asks nobody
        return ALLOW if would.verdict == "approval_required" else would
    if would.verdict == "deny":
        return Verdict("shadow", "shadow", would_verdict="deny", would_reason=would.reason)
    if would.verdict == "approval_required":
        return Verdict("shadow", "shadow", would_verdict="approval_required", would_reason="approval_required")
    return Verdict("shadow", "shadow", reserve=True, would_verdict="allow", would_reason="")


# -- messages -------------------------------------------------------------------------------

# One plain sentence per reason, which an agent can hand back to its model (SPEC §5). Fields:
# {tool}, {calls} and {spend} (the session's caps), {before} and {limit} ("once", "3 times": the sequence rules),
# {approval} (the approval id to wait for or send).
MESSAGES: Mapping[str, str] = {
    "": "The call may run.",
    "shadow": "The call was recorded but not run, because this agent version runs in shadow beside the "
              "stable version.",
    "kill_switch": "The kill switch has stopped this agent version, so no calls are allowed until a person "
                   "acts.",
    "rollout_inactive": "The rollout of this agent version is no longer active, so no calls are allowed in this "
                        "session.",
    "twin_only": "This agent version may only call tools against the digital twin for now, so live calls are "
                 "not allowed.",
    "sequence_before": "{tool} is not allowed until {before} has run in this session.",
    "sequence_max_calls": "The policy allows {tool} at most {limit} per session, and this session has "
                          "reached that limit.",
    "cap_tool_calls": "This session has used its {calls} tool calls; no more calls are allowed in it.",
    "cap_spend": "This call would take the session past its spending cap of ${spend}, so it is not allowed.",
    "approval_required": "A person must approve this call first; send it again with approval {approval} once "
                         "it is approved.",
    "approval_pending": "Approval {approval} is still waiting for a person; send the call again once it is "
                        "approved.",
    "approval_rejected": "A person rejected this call, so it must not run.",
    "approval_expired": "The approval for this call expired before a person approved it; send the call again "
                        "without it to ask for a new one.",
    "approval_used": "The approval for this call has already been used once; send the call again without it "
                     "to ask for a new one.",
    "approval_cancelled": "The approval for this call was cancelled because its session ended or the rollout "
                          "left the stage it was asked in; send the call again without it to ask for a new one.",
    "approval_arguments_changed": "The arguments differ from the ones that were approved, so a person must "
                                  "approve this call again as approval {approval}.",
}
REASONS: tuple[str, ...] = tuple(MESSAGES)


def message(reason: str, *, policy: Policy, tool: str, caps: Caps, approval_id: str | None) -> str:
    """Return the plain sentence for a verdict's reason code."""
    if not reason:
        return MESSAGES[""]  # the common case: no formatting on the hot path
    template = MESSAGES.get(reason)
    if template is None:
        return f"The call is not allowed ({reason})."
    before, limit = _rule_facts(policy, tool)
    return template.format(tool=tool, calls=caps.tool_calls_per_session, spend=_money(caps),
                           before=before, limit=limit, approval=approval_id or "")


def _rule_facts(policy: Policy, tool: str) -> tuple[str, str]:
    """Return the tools that must run before `tool`, and how often `tool` may run, per the rules."""
    before = " and ".join(r.before for r in policy.sequence_rules if isinstance(r, BeforeRule) and r.then == tool)
    limit = next((r.limits[tool] for r in policy.sequence_rules if isinstance(r, MaxCallsRule)
                  and tool in r.limits), 0)
    return before or "another tool", ("once" if limit == 1 else f"{limit} times")


def _money(caps: Caps) -> str:
    return f"{to_dollars(caps.spend_per_session_micros):.2f}"
