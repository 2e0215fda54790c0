"""Table tests of the plain sentence every decision answer carries (SPEC §5 `message`)."""

from __future__ import annotations

import re

import pytest

from gatekeeper.core.policy import Caps
from gatekeeper.core.verdicts import MESSAGES, REASONS, message
from gatekeeper.policy_files import parse_policy
from tests.support.runtime import POLICY

P = parse_policy(POLICY)
CANARY = Caps(20, 500_000)

# reason -> (tool, approval id, the exact sentence)
TABLE = {
    "": ("search_kb", None, "The call may run."),
    "shadow": ("update_ticket", None, "The call was recorded but not run, because this agent version runs in "
                                      "shadow beside the stable version."),
    "kill_switch": ("search_kb", None, "The kill switch has stopped this agent version, so no calls are allowed "
                                       "until a person acts."),
    "rollout_inactive": ("search_kb", None, "The rollout of this agent version is no longer active, so no calls "
                                            "are allowed in this session."),
    "twin_only": ("search_kb", None, "This agent version may only call tools against the digital twin for now, so "
                                     "live calls are not allowed."),
    "sequence_before": ("refund_payment", None, "refund_payment is not allowed until lookup_customer has run in "
                                                "this session."),
    "sequence_max_calls": ("send_email", None, "The policy allows send_email at most once per session, and this "
                                               "session has reached that limit."),
    "cap_tool_calls": ("search_kb", None, "This session has used its 20 tool calls; no more calls are allowed in "
                                          "it."),
    "cap_spend": ("search_kb", None, "This call would take the session past its spending cap of $0.50, so it is "
                                     "not allowed."),
    "approval_required": ("send_email", "a1", "A person must approve this call first; send it again with approval "
                                              "a1 once it is approved."),
    "approval_pending": ("send_email", "a1", "Approval a1 is still waiting for a person; send the call again once "
                                             "it is approved."),
    "approval_rejected": ("send_email", "a1", "A person rejected this call, so it must not run."),
    "approval_expired": ("send_email", "a1", "The approval for this call expired before a person approved it; "
                                             "send the call again without it to ask for a new one."),
    "approval_used": ("send_email", "a1", "The approval for this call has already been used once; send the call "
                                          "again without it to ask for a new one."),
    "approval_cancelled": ("send_email", "a1", "The approval for this call was cancelled because its session "
                                               "ended or the rollout left the stage it was asked in; send the call "
                                               "again without it to ask for a new one."),
    "approval_arguments_changed": ("send_email", "a2", "The arguments differ from the ones that were approved, so "
                                                       "a person must approve this call again as approval a2."),
}


def test_every_reason_has_exactly_one_row() -> None:
    assert set(TABLE) == set(REASONS) == set(MESSAGES)


@pytest.mark.parametrize("reason", list(TABLE))
def test_message(reason: str) -> None:
    tool, approval, expected = TABLE[reason]
    text = message(reason, policy=P, tool=tool, caps=CANARY, approval_id=approval)
    assert text == expected
    assert text.endswith(".") and not re.search(r"[.!?] [A-Z]", text)  # one sentence
    assert "{" not in text and ("_" not in reason or reason not in text)  # no template field or code left


def test_an_unknown_reason_still_reads_as_a_sentence() -> None:
    assert message("something_new", policy=P, tool="t", caps=CANARY, approval_id=None) == (
        "The call is not allowed (something_new).")


def test_a_tool_without_a_before_rule_names_another_tool() -> None:
    text = message("sequence_before", policy=P, tool="search_kb", caps=CANARY, approval_id=None)
    assert text == "search_kb is not allowed until another tool has run in this session."
