"""The policy fields of argument redaction (`approvals.redact`) and the overrun gate (`gate.max_overrun_rate`)."""

from __future__ import annotations

import pytest

from gatekeeper.policy_files import parse_policy, validate_policy_text

BASE = """
name: tiny
agents: []
stages:
  canary: {tiers: [5], caps: {tool_calls_per_session: 10, spend_per_session: 0.1}}
  expansion: {tiers: [50, 100], caps: {tool_calls_per_session: 12, spend_per_session: 0.2}%s}
stable_caps: {tool_calls_per_session: 30, spend_per_session: 1}
"""


def test_defaults_mask_nothing_and_allow_five_percent_of_overruns() -> None:
    policy = parse_policy(BASE % "")
    assert policy.approvals.redact == ()
    assert policy.gate.max_overrun_rate == policy.canary.gate.max_overrun_rate == 0.05


def test_redact_fields_and_an_overrun_rate_per_stage() -> None:
    policy = parse_policy(BASE % ", gate: {max_overrun_rate: 0.2}" + "gate: {max_overrun_rate: 0.01}\n"
                          "approvals: {expire_after: 5m, redact: [card_number, password]}\n")
    assert policy.approvals.redact == ("card_number", "password")
    assert (policy.gate.max_overrun_rate, policy.canary.gate.max_overrun_rate,
            policy.expansion.gate.max_overrun_rate) == (0.01, 0.01, 0.2)


@pytest.mark.parametrize(("extra", "problem"), [
    ("approvals: {redact: card_number}", "approvals.redact: must be a list, not a string"),
    ("approvals: {redact: ['']}", "approvals.redact[0]: must be a non-empty string, not a string"),
    ("approvals: {redact: [7]}", "approvals.redact[0]: must be a non-empty string, not a number"),
    ("approvals: {redact: [cvc, cvc]}", "approvals.redact[1]: 'cvc' is listed twice"),
    ("approvals: {redacts: [cvc]}", "approvals.redacts: unknown key 'redacts' (did you mean 'redact'?)"),
    ("gate: {max_overrun_rate: 1.5}", "gate.max_overrun_rate: must be a number between 0 and 1, not 1.5"),
    ("gate: {max_overrun_rate: '5%'}", "gate.max_overrun_rate: must be a number between 0 and 1, not '5%'"),
])
def test_problems_name_the_field(extra: str, problem: str) -> None:
    problems = [f"{p.path}: {p.message}" for p in validate_policy_text(BASE % "" + extra + "\n")]
    assert problems == [problem]
