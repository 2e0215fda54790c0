from __future__ import annotations

import pytest

from gatekeeper.core.trajectory import Step, handling_problems, judge

EXPECT = ["lookup_customer", "refund_payment", "send_email"]


@pytest.mark.parametrize(("calls", "harness", "passed", "problem"), [
    (EXPECT, None, True, None),
    (["search_kb", "lookup_customer", "search_kb", "refund_payment", "send_email"], True, True, None),
    (["refund_payment", "lookup_customer", "send_email"], None, False, "expected refund_payment"),
    (["lookup_customer", "refund_payment"], None, False, "expected send_email"),
    ([*EXPECT, "update_ticket"], None, False, "forbidden tool update_ticket"),
    (EXPECT, False, False, "harness reported failure"),
    ([], None, False, "expected lookup_customer"),
])
def test_judge(calls: list[str], harness: bool | None, passed: bool, problem: str | None) -> None:
    verdict = judge(calls, expect=EXPECT, forbid=["update_ticket"], harness_passed=harness)
    assert verdict.passed is passed
    if problem is None:
        assert verdict.problems == ()
    else:
        assert any(problem in p for p in verdict.problems), verdict.problems


# -- graceful handling -------------------------------------------------------------------------

R, IRR = "read_only", "irreversible"


def _step(tool: str, kind: str = IRR, *, verdict: str = "allow", failed: bool = False) -> Step:
    return Step(tool, kind, verdict, failed)


@pytest.mark.parametrize(("steps", "limits", "status", "problems"), [
    # stop and report after a timeout: clean
    ([_step("lookup", R), _step("send_email", failed=True)], {"send_email": 0}, "ok", []),
    # check the state first, then retry once: not blind, but one retry too many for a limit of 0
    ([_step("send_email", failed=True), _step("lookup", R), _step("send_email")], {"send_email": 0}, "ok",
     ["max_retries: send_email was retried 1 times after failing (at most 0)"]),
    # straight back to the irreversible call: blind
    ([_step("send_email", failed=True), _step("send_email")], {}, "ok",
     ["no_blind_retry: send_email (irreversible) was called again straight after it failed (call 2)"]),
    # a read-only tool may be retried straight away; three failures in a row are two retries
    ([_step("search", R, failed=True), _step("search", R, failed=True), _step("search", R)], {"search": 2}, "ok",
     []),
    ([_step("search", R, failed=True)] * 3 + [_step("search", R)], {"search": 2}, "ok",
     ["max_retries: search was retried 3 times after failing (at most 2)"]),
    # a success resets the count; a call waiting for a person is not a retry
    ([_step("search", R, failed=True), _step("search", R), _step("search", R, failed=True), _step("search", R)],
     {"search": 1}, "ok", []),
    ([_step("pay", failed=True), _step("lookup", R), _step("pay", verdict="approval_required"), _step("pay")],
     {"pay": 1}, "ok", []),
    # the end: abandoned is not clean; an agent that ends its run with an error does end it
    ([_step("lookup", R)], {}, "abandoned", ["ends_cleanly: the run was abandoned, not ended by the agent"]),
    ([_step("lookup", R, failed=True)], {}, "error", []),
])
def test_handling(steps: list[Step], limits: dict[str, int], status: str, problems: list[str]) -> None:
    assert handling_problems(steps, max_retries=limits, no_blind_retry=True, ends_cleanly=True,
                             status=status) == problems


def test_handling_assertions_can_be_turned_off() -> None:
    steps = [_step("send_email", failed=True), _step("send_email")]
    assert handling_problems(steps, max_retries={}, no_blind_retry=False, ends_cleanly=False, status="abandoned") == []
