"""Every (state, action) pair of the rollout state machine, with fixed times."""

from __future__ import annotations

import pytest

from gatekeeper.core import ladder
from gatekeeper.core.ladder import RolloutStatus, Tier
from gatekeeper.core.vocabulary import STATES
from gatekeeper.errors import IllegalTransition

T0 = 1_800_000_000.0


class Tiers:
    """A ladder of twin, shadow, canary 1/5 and expansion 10/25/50/100."""

    def tiers(self, stage: str) -> tuple[float, ...]:
        return {"twin": (0.0,), "shadow": (100.0,), "canary": (1.0, 5.0),
                "expansion": (10.0, 25.0, 50.0, 100.0)}[stage]


POLICY = Tiers()
MID = Tier("canary", 1)  # a tier with tiers on both sides


def status(state: str, tier: Tier = MID) -> RolloutStatus:
    return RolloutStatus(tier.stage, tier.index, state, "", T0)


# (state, action) -> (state after, tier after) or None when illegal; from MID, to_stage None.
EXPECTED: dict[tuple[str, str], tuple[str, Tier] | None] = {
    ("progressing", "promote"): ("progressing", Tier("expansion", 0)),
    ("progressing", "promote_full"): ("completed", Tier("expansion", 3)),
    ("progressing", "rollback"): ("paused", Tier("canary", 0)),
    ("progressing", "pause"): ("paused", MID),
    ("progressing", "resume"): None,
    ("progressing", "kill"): ("killed", Tier("shadow", 0)),
    ("progressing", "abort"): ("aborted", MID),
    ("progressing", "hold"): ("held", MID),
    ("progressing", "release"): None,
    ("held", "promote"): ("progressing", Tier("expansion", 0)),
    ("held", "promote_full"): ("completed", Tier("expansion", 3)),
    ("held", "rollback"): ("paused", Tier("canary", 0)),
    ("held", "pause"): ("paused", MID),
    ("held", "resume"): ("progressing", MID),
    ("held", "kill"): ("killed", Tier("shadow", 0)),
    ("held", "abort"): ("aborted", MID),
    ("held", "hold"): ("held", MID),
    ("held", "release"): ("progressing", MID),
    ("paused", "promote"): ("progressing", Tier("expansion", 0)),
    ("paused", "promote_full"): ("completed", Tier("expansion", 3)),
    ("paused", "rollback"): ("paused", Tier("canary", 0)),
    ("paused", "pause"): None,
    ("paused", "resume"): ("progressing", MID),
    ("paused", "kill"): ("killed", Tier("shadow", 0)),
    ("paused", "abort"): ("aborted", MID),
    ("paused", "hold"): None,
    ("paused", "release"): None,
    ("killed", "promote"): None,
    ("killed", "promote_full"): None,
    ("killed", "rollback"): ("killed", Tier("canary", 0)),
    ("killed", "pause"): None,
    ("killed", "resume"): ("progressing", MID),
    ("killed", "kill"): None,
    ("killed", "abort"): ("aborted", MID),
    ("killed", "hold"): None,
    ("killed", "release"): None,
    **{(terminal, action): None for terminal in ("completed", "aborted")
       for action in ladder.ACTIONS if action != "start"},
}


def test_table_covers_every_state_and_action() -> None:
    pairs = {(s, a) for s in STATES for a in ladder.ACTIONS if a != "start"}
    assert set(EXPECTED) == pairs


@pytest.mark.parametrize(("state", "action"), sorted(EXPECTED))
def test_state_action(state: str, action: str) -> None:
    expected = EXPECTED[(state, action)]
    if expected is None:
        with pytest.raises(IllegalTransition):
            ladder.apply(status(state), action, POLICY, now=T0 + 60)
        return
    after = ladder.apply(status(state), action, POLICY, now=T0 + 60, reason="why")
    assert (after.state, after.current_tier) == expected
    assert after.reason == "why"
    moved = after.current_tier != MID
    assert after.tier_started_at == (T0 + 60 if moved else T0)


def test_promote_walks_the_whole_ladder_then_completes() -> None:
    current = ladder.start(now=T0)
    seen = [current.current_tier]
    for step in range(1, 9):
        current = ladder.apply(current, "promote", POLICY, now=T0 + step)
        seen.append(current.current_tier)
    assert seen[:-1] == list(ladder.ladder(POLICY))
    assert current.state == "completed"
    assert [ladder.traffic_percent(POLICY, p) for p in ladder.ladder(POLICY)] == [
        0, 0, 1, 5, 10, 25, 50, 100]


@pytest.mark.parametrize(("here", "to_stage", "expected"), [
    (Tier("expansion", 2), "canary", Tier("canary", 0)),
    (Tier("expansion", 2), "twin", Tier("twin", 0)),
    (Tier("expansion", 2), "expansion", Tier("expansion", 0)),
    (Tier("shadow", 0), None, Tier("twin", 0)),
    (Tier("expansion", 0), None, Tier("canary", 1)),
])
def test_rollback_targets(here: Tier, to_stage: str | None, expected: Tier) -> None:
    after = ladder.apply(status("progressing", here), "rollback", POLICY, now=T0, to_stage=to_stage)
    assert after.current_tier == expected


@pytest.mark.parametrize(("here", "to_stage"), [
    (Tier("twin", 0), None),                 # nothing behind the first tier
    (Tier("canary", 0), "canary"),          # already at the stage's first tier
    (Tier("canary", 1), "expansion"),       # ahead, not behind
    (Tier("canary", 1), "production"),      # not a stage
])
def test_illegal_rollbacks(here: Tier, to_stage: str | None) -> None:
    with pytest.raises(IllegalTransition):
        ladder.apply(status("progressing", here), "rollback", POLICY, now=T0, to_stage=to_stage)


def test_kill_before_revert_stage_stays_put() -> None:
    after = ladder.apply(status("progressing", Tier("twin", 0)), "kill", POLICY, now=T0)
    assert (after.state, after.current_tier) == ("killed", Tier("twin", 0))


def test_kill_reverts_to_the_policy_stage() -> None:
    after = ladder.apply(status("progressing", Tier("expansion", 3)), "kill", POLICY, now=T0,
                          revert_to="canary")
    assert after.current_tier == Tier("canary", 0)


def test_allowed_actions() -> None:
    assert ladder.allowed_actions(status("completed")) == ()
    assert "resume" not in ladder.allowed_actions(status("progressing"))
    assert "rollback" not in ladder.allowed_actions(status("progressing", Tier("twin", 0)))
    assert ladder.allowed_actions(status("killed")) == ("rollback", "resume", "abort")


def test_labels() -> None:
    assert ladder.tier_label(POLICY, Tier("canary", 1)) == "canary 5%"
    assert ladder.tier_label(POLICY, Tier("shadow", 0)) == "shadow"
