"""Table tests of the pure hot-path core: verdicts, sequence rules, approvals, caps, bucketing, kill switch."""

from __future__ import annotations

import pytest

from gatekeeper.core.bucketing import BUCKETS, RolloutFacts, assign, bucket, within
from gatekeeper.core.budgets import cap_reason, caps_for, remaining, to_micros
from gatekeeper.core.kill_rule import trips
from gatekeeper.core.policy import Caps, KillSwitch
from gatekeeper.core.sequence import relevant_tools, sequence_reason
from gatekeeper.core.verdicts import Call, Verdict, after_reservation, judge
from gatekeeper.policy_files import parse_policy
from tests.support.runtime import POLICY

P = parse_policy(POLICY)
TOOL_OF = {"read_only": "search_kb", "reversible": "update_ticket", "irreversible": "send_email"}


def call(tool_class: str, *, arm: str = "candidate", environment: str = "live", mirror: bool = False,
         stage: str | None = "canary", state: str | None = "progressing", **kw: object) -> Call:
    return Call(arm=arm, environment=environment, mirror=mirror, rollout_stage=stage, rollout_state=state,
                tool=kw.pop("tool", TOOL_OF[tool_class]), tool_class=tool_class,  # type: ignore[arg-type]
                ran=kw.pop("ran", {}), **kw)  # type: ignore[arg-type]


ALLOW = ("allow", "", True)
NEEDS_PERSON = ("approval_required", "approval_required", False)
SHADOW = ("shadow", "shadow", True)  # reserved on the mirror's own caps: the shadow gate needs them

# (who, stage) x tool class -> (verdict, reason, reserve)
STAGE_TABLE = {
    ("twin session", "twin"): {"read_only": ALLOW, "reversible": ALLOW, "irreversible": NEEDS_PERSON},
    ("live candidate", "twin"): dict.fromkeys(TOOL_OF, ("deny", "twin_only", False)),
    ("mirror", "shadow"): {"read_only": ALLOW, "reversible": SHADOW,
                           "irreversible": ("shadow", "shadow", False)},
    ("live candidate", "canary"): {"read_only": ALLOW, "reversible": ALLOW, "irreversible": NEEDS_PERSON},
    ("live candidate", "expansion"): dict.fromkeys(TOOL_OF, ALLOW),
    ("stable", "canary"): dict.fromkeys(TOOL_OF, ALLOW),
    ("stable", None): dict.fromkeys(TOOL_OF, ALLOW),
    ("twin session", "expansion"): {"read_only": ALLOW, "reversible": ALLOW, "irreversible": NEEDS_PERSON},
    ("mirror", "canary"): {"read_only": ALLOW, "reversible": SHADOW, "irreversible": ("shadow", "shadow", False)},
    ("live candidate", "shadow"): {"read_only": ALLOW, "reversible": SHADOW,
                                   "irreversible": ("shadow", "shadow", False)},
}
WHO = {"twin session": {"environment": "twin"}, "live candidate": {}, "mirror": {"mirror": True},
       "stable": {"arm": "stable"}}


@pytest.mark.parametrize(("who", "stage", "tool_class"),
                         [(w, s, c) for (w, s), row in STAGE_TABLE.items() for c in row])
def test_every_stage_and_tool_class(who: str, stage: str | None, tool_class: str) -> None:
    verdict = judge(P, call(tool_class, stage=stage, **WHO[who]))  # type: ignore[arg-type]
    assert (verdict.verdict, verdict.reason, verdict.reserve) == STAGE_TABLE[(who, stage)][tool_class]


@pytest.mark.parametrize(("state", "arm", "expected"), [
    ("killed", "candidate", ("deny", "kill_switch")),
    ("aborted", "candidate", ("deny", "rollout_inactive")),
    (None, "candidate", ("deny", "rollout_inactive")),
    ("paused", "candidate", ("allow", "")),
    ("held", "candidate", ("allow", "")),
    ("completed", "candidate", ("allow", "")),  # the candidate is the stable version now
    ("killed", "stable", ("allow", "")),
    ("aborted", "stable", ("allow", "")),
])
def test_rollout_state_decides_candidate_calls(state: str | None, arm: str, expected: tuple[str, str]) -> None:
    for environment in ("live", "twin"):
        verdict = judge(P, call("irreversible" if arm == "stable" else "read_only", arm=arm, state=state,
                                environment=environment))
        assert (verdict.verdict, verdict.reason) == expected


@pytest.mark.parametrize(("tool", "ran", "reason"), [
    ("refund_payment", {}, "sequence_before"),
    ("refund_payment", {"lookup_customer": 0}, "sequence_before"),
    ("refund_payment", {"lookup_customer": 1}, ""),
    ("send_email", {}, ""),
    ("send_email", {"send_email": 1}, "sequence_max_calls"),
    ("search_kb", {"search_kb": 99}, ""),
])
def test_sequence_rules(tool: str, ran: dict[str, int], reason: str) -> None:
    assert sequence_reason(P.sequence_rules, tool, ran) == reason


def test_sequence_rules_name_only_the_history_they_need() -> None:
    assert relevant_tools(P.sequence_rules, "refund_payment") == {"lookup_customer"}
    assert relevant_tools(P.sequence_rules, "send_email") == {"send_email"}
    assert relevant_tools(P.sequence_rules, "search_kb") == frozenset()


@pytest.mark.parametrize(("who", "ran", "expected"), [
    ({"arm": "stable"}, {}, ("deny", "sequence_before")),
    ({"environment": "twin"}, {}, ("deny", "sequence_before")),
    ({}, {"lookup_customer": 1}, ("approval_required", "approval_required")),
    ({"mirror": True}, {}, ("shadow", "shadow")),
])
def test_sequence_rules_apply_at_every_stage(who: dict[str, object], ran: dict[str, int],
                                             expected: tuple[str, str]) -> None:
    verdict = judge(P, call("irreversible", tool="refund_payment", ran=ran, **who))  # type: ignore[arg-type]
    assert (verdict.verdict, verdict.reason) == expected
    if who.get("mirror"):
        assert (verdict.would_verdict, verdict.would_reason) == ("deny", "sequence_before")


@pytest.mark.parametrize(("approval", "cap", "expected"), [
    (None, "", ("approval_required", "approval_required", False, True)),
    (None, "cap_spend", ("deny", "cap_spend", False, False)),  # nobody approves what the caps refuse
    ("pending", "", ("approval_required", "approval_pending", False, False)),
    ("approved", "", ("allow", "", True, False)),
    ("rejected", "", ("deny", "approval_rejected", False, False)),
    ("expired", "", ("deny", "approval_expired", False, False)),
    ("used", "", ("deny", "approval_used", False, False)),
    ("cancelled", "", ("deny", "approval_cancelled", False, False)),
    ("changed", "", ("approval_required", "approval_arguments_changed", False, True)),  # a new one for new args
    ("changed", "cap_tool_calls", ("deny", "cap_tool_calls", False, False)),
])
def test_approvals(approval: str | None, cap: str, expected: tuple[str, str, bool, bool]) -> None:
    verdict = judge(P, call("irreversible", approval=approval, cap_reason=cap))
    assert (verdict.verdict, verdict.reason, verdict.reserve, verdict.open_approval) == expected
    assert verdict.consume_approval == (approval == "approved")


@pytest.mark.parametrize(("before", "reserved", "after"), [
    (Verdict("allow", reserve=True), True, ("allow", "", None, None)),
    (Verdict("allow", reserve=True), False, ("deny", "cap_spend", None, None)),
    (Verdict("shadow", "shadow", reserve=True, would_verdict="allow", would_reason=""), False,
     ("shadow", "shadow", "deny", "cap_spend")),
    (Verdict("deny", "kill_switch"), False, ("deny", "kill_switch", None, None)),
])
def test_after_reservation(before: Verdict, reserved: bool, after: tuple[object, ...]) -> None:
    found = after_reservation(before, reserved=reserved, cap_reason="cap_spend")
    assert (found.verdict, found.reason, found.would_verdict, found.would_reason) == after


@pytest.mark.parametrize(("used", "spend", "cost", "reason"), [
    (0, 0, 500_000, ""), (19, 0, 0, ""), (20, 0, 0, "cap_tool_calls"), (0, 400_000, 100_000, ""),
    (0, 400_001, 100_000, "cap_spend"), (20, 500_000, 1, "cap_tool_calls"),
])
def test_cap_reason(used: int, spend: int, cost: int, reason: str) -> None:
    assert cap_reason(Caps(20, 500_000), tool_calls=used, spend_micros=spend, cost_micros=cost) == reason


def test_caps_are_fixed_by_arm_and_stage() -> None:
    assert caps_for(P, arm="stable", stage="canary") == P.stable_caps
    assert caps_for(P, arm="candidate", stage="canary") == P.canary.caps
    assert caps_for(P, arm="candidate", stage="twin") == P.canary.caps
    assert caps_for(P, arm="candidate", stage="shadow") == P.canary.caps
    assert caps_for(P, arm="candidate", stage="expansion") == P.expansion.caps
    assert remaining(Caps(20, 500_000), tool_calls=25, spend_micros=10) == (0, 499_990)


@pytest.mark.parametrize("dollars", [-0.01, float("nan"), float("inf"), -float("inf"), 10_000.01, 1e300])
def test_bad_costs_are_refused(dollars: float) -> None:
    with pytest.raises(ValueError, match="finite amount"):
        to_micros(dollars)


@pytest.mark.parametrize(("dollars", "micros"), [(0.0, 0), (0.1, 100_000), (0.07, 70_000), (10_000.0, 10**10),
                                                  (1e-6, 1), (0.1234564, 123_456)])
def test_costs_become_micro_dollars(dollars: float, micros: int) -> None:
    assert to_micros(dollars) == micros


def test_buckets_are_deterministic_and_spread() -> None:
    assert bucket("bot", 7, "k") == bucket("bot", 7, "k")
    assert bucket("bot", 7, "k") != bucket("bot", 8, "k") or bucket("bot", 7, "j") != bucket("bot", 8, "j")
    found = [bucket("bot", 1, f"key-{n}") for n in range(20_000)]
    assert all(0 <= b < BUCKETS for b in found)
    share = sum(within(b, 5.0) for b in found) / len(found)
    assert 0.04 < share < 0.06


def test_raising_the_tier_only_moves_stable_sessions_to_the_candidate() -> None:
    tiers = [1.0, 5.0, 10.0, 25.0, 50.0, 100.0]
    for n in range(2_000):
        arms = [within(bucket("bot", 3, f"key-{n}"), percent) for percent in tiers]
        assert arms == sorted(arms), "once a key is in the candidate it stays there as the tier rises"
    assert all(within(b, 100.0) for b in range(BUCKETS)) and not any(within(b, 0.0) for b in range(BUCKETS))


@pytest.mark.parametrize(("stage", "state", "environment", "bucket_", "expected"), [
    ("canary", "progressing", "live", 99, ("candidate", "canary", False)),
    ("canary", "progressing", "live", 100, ("stable", "canary", False)),
    ("canary", "paused", "live", 0, ("candidate", "canary", False)),
    ("canary", "killed", "live", 0, ("stable", "canary", False)),
    ("shadow", "progressing", "live", 4_999, ("stable", "shadow", True)),
    ("shadow", "progressing", "live", 5_000, ("stable", "shadow", False)),
    ("twin", "progressing", "live", 0, ("stable", "twin", False)),
    ("twin", "progressing", "twin", 9_999, ("candidate", "twin", False)),
    ("expansion", "held", "twin", 9_999, ("candidate", "twin", False)),
    ("canary", "aborted", "twin", 0, ("stable", "canary", False)),
])
def test_assignment(stage: str, state: str, environment: str, bucket_: int,
                    expected: tuple[str, str, bool]) -> None:
    facts = RolloutFacts(1, stage, state, traffic_percent=1.0 if stage == "canary" else 0.0, shadow_percent=50.0)
    found = assign(facts, environment=environment, bucket_=bucket_)
    assert (found.arm, found.stage, found.mirror) == expected
    assert assign(None, environment=environment, bucket_=bucket_).arm == "stable"


@pytest.mark.parametrize(("calls", "errors", "tripped"), [
    (9, 9, False), (10, 2, False), (10, 3, True), (100, 25, False), (100, 26, True), (0, 0, False),
])
def test_kill_switch_condition(calls: int, errors: int, tripped: bool) -> None:
    policy = KillSwitch(window_s=60.0, min_calls=10, max_error_rate=0.25, revert_to="shadow")
    assert trips(policy, calls=calls, errors=errors) is tripped
