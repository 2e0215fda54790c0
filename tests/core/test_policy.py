"""Table-driven tests of the policy model (SPEC §4): units, immutability, and what a policy answers."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from gatekeeper.core.policy import MaxCallsRule, parse_duration, parse_money
from gatekeeper.policy_files import load_policy_file, parse_policy
from tests.support.policy_texts import EXAMPLE, MINIMAL

# -- units ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30s", 30.0),
        ("10m", 600.0),
        ("24h", 86400.0),
        ("1h30m", 5400.0),
        ("500ms", 0.5),
        ("2d", 172800.0),
        ("1.5s", 1.5),
        ("1m30s500ms", 90.5),
        ("0", 0.0),
        ("0s", 0.0),
    ],
)
def test_parse_duration_converts_to_seconds(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "30", "10 minutes", "1x", "-5s", "s", "1h 30m", "1.s", None, 30])
def test_parse_duration_rejects_bad_input(text: Any) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("value", "micros"),
    [
        (0.50, 500_000),
        (1, 1_000_000),
        (0, 0),
        (0.1, 100_000),
        (2.000001, 2_000_001),
        ("0.40", 400_000),
        (1234.56, 1_234_560_000),
        (0.3, 300_000),
    ],
)
def test_parse_money_is_exact_micro_dollars(value: object, micros: int) -> None:
    assert parse_money(value) == micros


@pytest.mark.parametrize(
    "value", [-0.01, -1, float("nan"), float("inf"), True, False, None, "lots", [1], 0.0000001, "$1"]
)
def test_parse_money_rejects_bad_input(value: object) -> None:
    with pytest.raises(ValueError):
        parse_money(value)


# -- the model -----------------------------------------------------------------------------


def test_policy_is_immutable() -> None:
    policy = load_policy_file(EXAMPLE)
    with pytest.raises(dataclasses.FrozenInstanceError):
        policy.name = "other"  # type: ignore[misc]
    with pytest.raises(AttributeError):  # caps are a tuple (built per decision)
        policy.canary.caps.tool_calls_per_session = 1_000  # type: ignore[misc]
    with pytest.raises(TypeError):
        policy.tools["rm_rf"] = "read_only"  # type: ignore[index]
    with pytest.raises(TypeError):
        policy.alerts.by_severity["critical"] = "hold"  # type: ignore[index]
    assert isinstance(policy.agents, tuple) and isinstance(policy.canary.tiers, tuple)


def test_equal_policies_hash_equal_so_they_can_key_caches() -> None:
    first, second = load_policy_file(EXAMPLE), load_policy_file(EXAMPLE)
    assert first == second and hash(first) == hash(second) and len({first, second}) == 1
    assert hash(MaxCallsRule(limits={"a": 1, "b": 2})) == hash(MaxCallsRule(limits={"b": 2, "a": 1}))


@pytest.mark.parametrize(
    ("tool", "tool_class"),
    [
        ("search_kb", "read_only"),
        ("update_ticket", "reversible"),
        ("refund_payment", "irreversible"),
        ("drop_database", "irreversible"),
        ("", "irreversible"),
    ],
)
def test_tool_class_treats_unnamed_tools_as_irreversible(tool: str, tool_class: str) -> None:
    assert load_policy_file(EXAMPLE).tool_class(tool) == tool_class


@pytest.mark.parametrize(
    ("stage", "tiers"),
    [
        ("twin", (0.0,)),
        ("shadow", (100.0,)),
        ("canary", (1.0, 5.0)),
        ("expansion", (10.0, 25.0, 50.0, 100.0)),
    ],
)
def test_tiers_per_stage(stage: str, tiers: tuple[float, ...]) -> None:
    assert load_policy_file(EXAMPLE).tiers(stage) == tiers


def test_tiers_of_an_unknown_stage_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown stage"):
        load_policy_file(EXAMPLE).tiers("stable")


@pytest.mark.parametrize(
    ("severity", "action"),
    [("critical", "kill"), ("CRITICAL", "kill"), ("warning", "rollback"), (None, "rollback")],
)
def test_alert_action_for_severity(severity: str | None, action: str) -> None:
    assert load_policy_file(EXAMPLE).alerts.action_for(severity) == action


def test_extra_query_render_fills_placeholders_and_keeps_promql_braces() -> None:
    text = (
        MINIMAL
        + 'gate: {queries: {errs: {query: \'rate(x{agent="{agent}",v="{version}"}[{window}])\', max: 1}}}\n'
    )
    (query,) = parse_policy(text).gate.queries
    assert query.render(agent="bot", version="v7", window="10m") == 'rate(x{agent="bot",v="v7"}[10m])'
