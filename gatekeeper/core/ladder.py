"""The rollout state machine: where a candidate stands on the ladder, and how it may move.

A rollout climbs a ladder of tiers: twin, shadow, then each canary tier, then each
expansion tier. Passing the last expansion tier completes it: the candidate becomes stable.

States:
- progressing: gates are evaluated and may promote, hold or roll back.
- held: a gate or an outage stopped it; it resumes by itself when the cause clears.
- paused: a person (or an automatic rollback) stopped it; only a person resumes it.
- killed: the kill switch or a person killed it; candidate calls are denied; a person resumes it.
- completed, aborted: terminal; nothing moves it any more.

Every function here takes the status and returns a new one, or raises IllegalTransition.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Protocol

from gatekeeper.core.vocabulary import GATED_STATES, LIVE_STATES, PREVIEW_STAGES, STAGES, TERMINAL_STATES
from gatekeeper.errors import IllegalTransition

ACTIONS = ("start", "promote", "promote_full", "rollback", "pause", "resume", "kill", "abort",
           "hold", "release")


class LadderPolicy(Protocol):
    """What the state machine needs of a policy: the tiers of each stage."""

    def tiers(self, stage: str) -> tuple[float, ...]: ...


@dataclass(frozen=True)
class Tier:
    """A tier of the ladder: a stage and an index into its tiers (twin and shadow have one tier each)."""

    stage: str
    index: int


@dataclass(frozen=True)
class RolloutStatus:
    """Where a rollout stands and in which state, and since when it is at this tier."""

    stage: str
    tier: int
    state: str
    reason: str
    tier_started_at: float

    @property
    def current_tier(self) -> Tier:
        """Return the tier the rollout stands at."""
        return Tier(self.stage, self.tier)


class _Move(Protocol):
    def __call__(self, status: RolloutStatus, policy: LadderPolicy, *, now: float, reason: str,
                 to_stage: str | None, revert_to: str) -> RolloutStatus: ...


def ladder(policy: LadderPolicy) -> tuple[Tier, ...]:
    """Return every tier of the policy's ladder, in order."""
    return tuple(Tier(stage, index) for stage in STAGES for index in range(len(policy.tiers(stage))))


def traffic_percent(policy: LadderPolicy, tier: Tier) -> float:
    """Return the share of live sessions the candidate serves at a tier (shadow serves none)."""
    if tier.stage in PREVIEW_STAGES:
        return 0.0
    return policy.tiers(tier.stage)[tier.index]


def tier_label(policy: LadderPolicy, tier: Tier) -> str:
    """Return a short human label such as `canary 5%`."""
    if tier.stage in PREVIEW_STAGES:
        return tier.stage
    return f"{tier.stage} {policy.tiers(tier.stage)[tier.index]:g}%"


def start(*, now: float, reason: str = "rollout started") -> RolloutStatus:
    """Return the status of a new rollout: twin, first tier, progressing."""
    return RolloutStatus("twin", 0, "progressing", reason, now)


def apply(status: RolloutStatus, action: str, policy: LadderPolicy, *, now: float, reason: str = "",
          to_stage: str | None = None, revert_to: str = "shadow") -> RolloutStatus:
    """Return the status after `action`, or raise IllegalTransition."""
    if status.state in TERMINAL_STATES:
        raise IllegalTransition(f"the rollout is {status.state}; nothing can move it", field="action")
    handler = _HANDLERS.get(action)
    if handler is None:
        raise IllegalTransition(f"unknown action {action!r}", field="action")
    if status.state not in handler.allowed_from:
        raise IllegalTransition(f"cannot {action.replace('_', ' ')} a rollout that is {status.state}",
                                field="action")
    return handler.move(status, policy, now=now, reason=reason, to_stage=to_stage, revert_to=revert_to)


def allowed_actions(status: RolloutStatus) -> tuple[str, ...]:
    """Return the actions a person may take now (what the dashboard enables)."""
    if status.state in TERMINAL_STATES:
        return ()
    people = ("promote", "promote_full", "rollback", "pause", "resume", "kill", "abort")
    return tuple(a for a in people if status.state in _HANDLERS[a].allowed_from
                 and not (a == "rollback" and status.current_tier == Tier("twin", 0)))


def _at(status: RolloutStatus, tier: Tier, state: str, reason: str, now: float) -> RolloutStatus:
    moved = tier != status.current_tier
    return replace(status, stage=tier.stage, tier=tier.index, state=state, reason=reason,
                   tier_started_at=now if moved else status.tier_started_at)


def _promote(status: RolloutStatus, policy: LadderPolicy, *, now: float, reason: str,
             to_stage: str | None, revert_to: str) -> RolloutStatus:
    tier_steps = ladder(policy)
    index = tier_steps.index(status.current_tier) if status.current_tier in tier_steps else len(tier_steps) - 1
    if index + 1 >= len(tier_steps):
        return _at(status, status.current_tier, "completed", reason, now)
    return _at(status, tier_steps[index + 1], "progressing", reason, now)


def _promote_full(status: RolloutStatus, policy: LadderPolicy, *, now: float, reason: str,
                  to_stage: str | None, revert_to: str) -> RolloutStatus:
    return _at(status, ladder(policy)[-1], "completed", reason, now)


def _rollback(status: RolloutStatus, policy: LadderPolicy, *, now: float, reason: str,
              to_stage: str | None, revert_to: str) -> RolloutStatus:
    target = _rollback_target(status.current_tier, policy, to_stage)
    state = "killed" if status.state == "killed" else "paused"
    return _at(status, target, state, reason, now)


def _rollback_target(current: Tier, policy: LadderPolicy, to_stage: str | None) -> Tier:
    tier_steps = ladder(policy)
    index = tier_steps.index(current) if current in tier_steps else len(tier_steps) - 1
    if to_stage is None:
        if index == 0:
            raise IllegalTransition("the rollout is at its first tier; abort it instead", field="action")
        return tier_steps[index - 1]
    if to_stage not in STAGES:
        raise IllegalTransition(f"unknown stage {to_stage!r}", field="to_stage")
    target = Tier(to_stage, 0)
    if tier_steps.index(target) >= index:
        raise IllegalTransition(f"{to_stage} is not behind the rollout's current tier", field="to_stage")
    return target


def _set_state(state: str) -> _Move:
    def move(status: RolloutStatus, policy: LadderPolicy, *, now: float, reason: str,
             to_stage: str | None, revert_to: str) -> RolloutStatus:
        return _at(status, status.current_tier, state, reason, now)
    return move


def _kill(status: RolloutStatus, policy: LadderPolicy, *, now: float, reason: str,
          to_stage: str | None, revert_to: str) -> RolloutStatus:
    tier_steps = ladder(policy)
    target = Tier(revert_to, 0)
    here = status.current_tier
    return _at(status, target if tier_steps.index(target) < tier_steps.index(here) else here, "killed", reason, now)


@dataclass(frozen=True)
class _Handler:
    allowed_from: frozenset[str]
    move: _Move


_HANDLERS: dict[str, _Handler] = {
    "promote": _Handler(LIVE_STATES, _promote),
    "promote_full": _Handler(LIVE_STATES, _promote_full),
    "rollback": _Handler(LIVE_STATES | {"killed"}, _rollback),
    "pause": _Handler(GATED_STATES, _set_state("paused")),
    "resume": _Handler(frozenset({"paused", "held", "killed"}), _set_state("progressing")),
    "kill": _Handler(LIVE_STATES, _kill),
    "abort": _Handler(LIVE_STATES | {"killed"}, _set_state("aborted")),
    # A held rollout may be held again, by a new cause (an alert on a gate's hold): one more audit entry.
    "hold": _Handler(GATED_STATES, _set_state("held")),
    "release": _Handler(frozenset({"held"}), _set_state("progressing")),
}
