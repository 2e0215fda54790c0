"""The domain's closed sets of words, each written once as a Literal; every other module imports them.

Stages (SPEC §3), in ladder order:
- twin: the candidate runs scenarios against the twin; no live traffic.
- shadow: the candidate mirrors a share of live sessions and never acts live.
- canary, expansion: the candidate serves a share of live sessions, one tier at a time.

Rollout states: see `core/ladder.py`, the state machine that moves between them. Verdicts: see
`core/verdicts.py`, which judges a tool call. The tuples and sets below are read from the
Literals, for loops, messages and membership tests.
"""

from __future__ import annotations

from typing import Literal, get_args

Stage = Literal["twin", "shadow", "canary", "expansion"]
RevertStage = Literal["twin", "shadow", "canary"]  # where a kill may send the candidate back
STAGES: tuple[Stage, ...] = get_args(Stage)
REVERT_STAGES: tuple[RevertStage, ...] = get_args(RevertStage)
PREVIEW_STAGES: frozenset[str] = frozenset({"twin", "shadow"})  # no tier of live traffic: the candidate never acts live
TRAFFIC_STAGES: frozenset[str] = frozenset({"canary", "expansion"})  # the candidate serves a tier of live traffic

RolloutState = Literal["progressing", "held", "paused", "killed", "completed", "aborted"]
STATES: tuple[RolloutState, ...] = get_args(RolloutState)
TERMINAL_STATES: frozenset[str] = frozenset({"completed", "aborted"})
# The candidate serves and the kill switch watches in the live states; gates judge in the gated ones.
LIVE_STATES: frozenset[str] = frozenset({"progressing", "held", "paused"})
GATED_STATES: frozenset[str] = frozenset({"progressing", "held"})  # a person may pause or hold these too

# Who holds a held rollout, kept in `rollouts.held_by`: the gate (failing or unproven checks), an
# outage of the metrics source, or an alert (only that alert's resolution lifts its hold).
HoldOwner = Literal["gate", "outage", "alert"]
HOLD_OWNERS: tuple[HoldOwner, ...] = get_args(HoldOwner)

VerdictName = Literal["allow", "shadow", "deny", "approval_required"]
VERDICTS: tuple[VerdictName, ...] = get_args(VerdictName)

ToolClass = Literal["read_only", "reversible", "irreversible"]
TOOL_CLASSES: tuple[ToolClass, ...] = get_args(ToolClass)

ApprovalState = Literal["pending", "approved", "rejected", "expired", "cancelled"]
APPROVAL_STATES: tuple[ApprovalState, ...] = get_args(ApprovalState)

Arm = Literal["candidate", "stable"]
Environment = Literal["live", "twin"]
