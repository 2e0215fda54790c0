from __future__ import annotations

import pytest

from gatekeeper.core.trajectory import judge

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
