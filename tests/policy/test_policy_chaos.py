"""`stages.twin.chaos` and the scenarios' graceful-handling assertions in policy files: values, defaults, problems."""

from __future__ import annotations

import pytest

from gatekeeper.core.chaos import ToolChaos
from gatekeeper.policy_files import load_policy_file, parse_policy, validate_policy_text
from tests.support.policy_texts import EXAMPLE

BASE = """
name: tiny
agents: []
tools: {search_kb: read_only, send_email: irreversible}
stages:
  twin:
    scenarios:
      notify: {expect: [send_email]SCENARIO}
    chaos:
CHAOS
  canary: {tiers: [5], caps: {tool_calls_per_session: 10, spend_per_session: 0.1}}
  expansion: {tiers: [50, 100], caps: {tool_calls_per_session: 12, spend_per_session: 0.2}}
stable_caps: {tool_calls_per_session: 30, spend_per_session: 1}
"""


def text(chaos: str = "      send_email: {timeout_rate: 0.1}", scenario: str = "") -> str:
    return BASE.replace("CHAOS", chaos).replace("SCENARIO", scenario)


def test_chaos_per_tool_and_class_with_defaults() -> None:
    policy = parse_policy(text("      search_kb: {error_rate: 0.05, latency: 2s}\n"
                               "      irreversible: {timeout_rate: 0.1, partial_rate: 0.2, malformed_rate: 0.3,"
                               " latency: 500ms, latency_rate: 0.5}", ", max_retries: {send_email: 0}"))
    assert dict(policy.twin.chaos) == {
        "search_kb": ToolChaos(error_rate=0.05, latency_s=2.0),
        "irreversible": ToolChaos(timeout_rate=0.1, partial_rate=0.2, malformed_rate=0.3, latency_s=0.5,
                                  latency_rate=0.5)}
    scenario = policy.twin.scenarios["notify"]
    assert (dict(scenario.max_retries), scenario.no_blind_retry, scenario.ends_cleanly) == ({"send_email": 0}, True,
                                                                                          True)


def test_no_chaos_and_handling_defaults() -> None:
    policy = parse_policy(text("      {}", ", no_blind_retry: false, ends_cleanly: false"))
    scenario = policy.twin.scenarios["notify"]
    assert dict(policy.twin.chaos) == {} and (scenario.no_blind_retry, scenario.ends_cleanly) == (False, False)


@pytest.mark.parametrize(("chaos", "scenario", "path", "message"), [
    ("      send_email: {error_rate: 0.6, timeout_rate: 0.5}", "", "stages.twin.chaos.send_email",
     "the fault rates add up to 1.1"),
    ("      send_email: {error_rate: 1.5}", "", "stages.twin.chaos.send_email.error_rate", "between 0 and 1"),
    ("      send_email: {eror_rate: 0.1}", "", "stages.twin.chaos.send_email.eror_rate", "unknown key"),
    ("      send_emial: {error_rate: 0.1}", "", "stages.twin.chaos.send_emial", "not in tools"),
    ("      send_email: {latency: 11m}", "", "stages.twin.chaos.send_email.latency", "at most 600s"),
    ("      send_email: {latency: soon}", "", "stages.twin.chaos.send_email.latency", "must be a duration"),
    ("      send_email: {latency: 1s, latency_rate: 0}", "", "stages.twin.chaos.send_email", "injects nothing"),
    ("      send_email: 0.1", "", "stages.twin.chaos.send_email", "must be a mapping"),
    ("      {}", ", max_retries: {send_emial: 1}", "stages.twin.scenarios.notify.max_retries.send_emial",
     "not in tools"),
    ("      {}", ", max_retries: {send_email: -1}", "stages.twin.scenarios.notify.max_retries.send_email",
     "whole number of at least 0"),
])
def test_each_chaos_problem_has_its_field_path(chaos: str, scenario: str, path: str, message: str) -> None:
    problems = validate_policy_text(text(chaos, scenario))
    assert [p for p in problems if p.path == path and message in p.message], problems


def test_the_shipped_spec_example_rehearses_failures() -> None:
    policy = load_policy_file(EXAMPLE)
    assert dict(policy.twin.chaos) == {"lookup_customer": ToolChaos(error_rate=0.05, latency_s=2.0),
                                       "send_email": ToolChaos(timeout_rate=0.1)}
    assert dict(policy.twin.scenarios["refund-request"].max_retries) == {"refund_payment": 0}
