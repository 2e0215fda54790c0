"""Policy files (SPEC §4): YAML through the pydantic format into the policy model, every problem with its path."""

from __future__ import annotations

import copy
import hashlib
from pathlib import Path
from typing import Any

import pytest
import yaml

from gatekeeper.core.policy import BeforeRule, MaxCallsRule, Policy
from gatekeeper.policy_files import check_paths, load_policy_file, parse_policy, policy_revision, validate_policy_text
from gatekeeper.policy_problems import PolicyError, PolicyProblem
from tests.support.policy_texts import EXAMPLE, MINIMAL, POLICIES

DELETE = object()


def example() -> dict[str, Any]:
    return yaml.safe_load(EXAMPLE.read_text())


def mutated(dotted: str, value: object) -> str:
    """Return the SPEC example as YAML with one field set (or deleted) by its dotted path."""
    document = copy.deepcopy(example())
    *parents, last = dotted.split(".")
    node: Any = document
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node.setdefault(key, {})
    if value is DELETE:
        del node[last]
    elif isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return yaml.safe_dump(document)


def test_policy_revision_is_sha256_prefix_of_utf8_bytes() -> None:
    assert policy_revision("") == "e3b0c44298fc"
    assert policy_revision("name: é") == hashlib.sha256("name: é".encode()).hexdigest()[:12]


# -- the model -----------------------------------------------------------------------------


def test_spec_example_parses_to_the_documented_values() -> None:
    policy = load_policy_file(EXAMPLE)
    assert (policy.name, policy.agents) == ("support-default", ("support-bot",))
    assert policy.sequence_rules == (
        BeforeRule(before="lookup_customer", then="refund_payment"),
        MaxCallsRule(limits={"send_email": 1}),
    )
    assert policy.twin.scenarios["refund-request"].expect == (
        "lookup_customer",
        "refund_payment",
        "send_email",
    )
    assert policy.canary.caps.spend_per_session_micros == 500_000
    assert policy.expansion.tiers == (10.0, 25.0, 50.0, 100.0)
    assert policy.stable_caps.spend_per_session_micros == 2_000_000
    assert (policy.gate.interval_s, policy.gate.window_s, policy.gate.soak_s) == (30.0, 600.0, 1800.0)
    assert policy.gate.max_cost_per_session_micros == 400_000
    assert policy.kill_switch.revert_to == "shadow"
    assert policy.alerts.action_for("critical") == "kill"
    assert policy.revision == policy_revision(EXAMPLE.read_text())
    assert policy.file == str(EXAMPLE)


@pytest.mark.parametrize(
    ("attribute", "expected"),
    [
        ("tools", {}),
        ("sequence_rules", ()),
        ("twin.gate.min_runs", 50),
        ("twin.gate.min_pass_rate", 0.98),
        ("twin.gate.max_twin_age_s", 86400.0),
        ("twin.scenarios", {}),
        ("shadow.traffic_percent", 100.0),
        ("shadow.execute", ("read_only",)),
        ("shadow.gate.min_sessions", 200),
        ("shadow.gate.soak_s", 3600.0),
        ("shadow.gate.max_error_rate", 0.05),
        ("shadow.gate.max_violation_rate", 0.01),
        ("shadow.gate.min_agreement", 0.9),
        ("canary.approval_required", ("irreversible",)),
        ("expansion.approval_required", ()),
        ("gate.interval_s", 30.0),
        ("gate.window_s", 600.0),
        ("gate.soak_s", 1800.0),
        ("gate.min_sessions", 100),
        ("gate.max_error_rate", 0.02),
        ("gate.max_p95_latency_s", 2.0),
        ("gate.max_cost_per_session_micros", 400_000),
        ("gate.failure_limit", 2),
        ("gate.on_metrics_error", "hold"),
        ("gate.error_limit", 4),
        ("gate.queries", ()),
        ("kill_switch.window_s", 60.0),
        ("kill_switch.min_calls", 20),
        ("kill_switch.max_error_rate", 0.25),
        ("kill_switch.revert_to", "shadow"),
        ("alerts.default", "rollback"),
        ("alerts.by_severity", {}),
        ("approvals.expire_after_s", 900.0),
    ],
)
def test_defaults_fill_what_a_policy_leaves_out(attribute: str, expected: object) -> None:
    value: Any = parse_policy(MINIMAL)
    for name in attribute.split("."):
        value = getattr(value, name)
    assert value == expected


def test_stage_gate_keys_merge_over_the_top_level_gate() -> None:
    text = MINIMAL.replace("canary: {", "canary: {gate: {soak: 1h, max_error_rate: 0.01}, ")
    policy = parse_policy(text + "gate: {window: 5m, soak: 10m}\n")
    assert (policy.canary.gate.soak_s, policy.canary.gate.max_error_rate) == (3600.0, 0.01)
    assert policy.canary.gate.window_s == 300.0
    assert policy.expansion.gate == policy.gate
    assert policy.gate.soak_s == 600.0


# -- validation: every problem, with its field path ----------------------------------------

PROBLEMS = [
    # (field to set, value, problem path, message fragment)
    ("tols", {"a": "read_only"}, "tols", "did you mean 'tools'"),
    ("gate.intervall", "30s", "gate.intervall", "did you mean 'interval'"),
    ("stages.canary.tirs", [1], "stages.canary.tirs", "did you mean 'tiers'"),
    ("name", DELETE, "name", "is required"),
    ("name", "Support Default", "name", "slug"),
    ("agents", DELETE, "agents", "is required"),
    ("agents", "support-bot", "agents", "must be a list"),
    ("agents", ["Support_Bot"], "agents[0]", "slug"),
    ("agents", ["a" * 64], "agents[0]", "slug"),
    ("agents", ["support-bot", "support-bot"], "agents[1]", "listed twice"),
    ("stages.expansion", DELETE, "stages.expansion", "is required"),
    ("stages.canary.caps", DELETE, "stages.canary.caps", "is required"),
    ("stable_caps", DELETE, "stable_caps", "is required"),
    ("stable_caps.spend_per_session", DELETE, "stable_caps.spend_per_session", "is required"),
    ("stable_caps.tool_calls_per_session", "many", "stable_caps.tool_calls_per_session", "whole number"),
    ("stable_caps.tool_calls_per_session", 2.5, "stable_caps.tool_calls_per_session", "whole number"),
    ("gate.min_sessions", True, "gate.min_sessions", "whole number"),
    ("stages.canary.caps.spend_per_session", -1, "stages.canary.caps.spend_per_session", "non-negative"),
    ("gate.max_cost_per_session", "free", "gate.max_cost_per_session", "dollars"),
    ("gate.window", "10 minutes", "gate.window", "duration"),
    ("gate.interval", 30, "gate.interval", "duration"),
    ("gate.interval", "0s", "gate.interval", "longer than zero"),
    ("approvals.expire_after", "soon", "approvals.expire_after", "duration"),
    ("gate.max_error_rate", 2, "gate.max_error_rate", "between 0 and 1"),
    ("stages.shadow.gate.min_agreement", -0.1, "stages.shadow.gate.min_agreement", "between 0 and 1"),
    ("stages.shadow.traffic_percent", 0, "stages.shadow.traffic_percent", "between 0 and 100"),
    ("stages.canary.tiers", [0, 5], "stages.canary.tiers[0]", "between 0 and 100"),
    ("stages.expansion.tiers", [10, 25, 50, 150], "stages.expansion.tiers[3]", "between 0 and 100"),
    (
        "stages.expansion.tiers",
        [10, 50, 25, 100],
        "stages.expansion.tiers[2]",
        "greater than the tier before",
    ),
    ("stages.canary.tiers", [1, 1], "stages.canary.tiers[1]", "greater than the tier before"),
    ("stages.canary.tiers", [], "stages.canary.tiers", "must not be empty"),
    ("stages.canary.tiers", ["5%"], "stages.canary.tiers[0]", "between 0 and 100"),
    ("stages.expansion.tiers", [10, 25, 50], "stages.expansion.tiers[2]", "must be 100"),
    ("stages.canary.tiers", [1, 10], "stages.canary.tiers[1]", "below the first expansion tier"),
    ("tools.send_email", "dangerous", "tools.send_email", "unknown tool class"),
    ("tools.send_email", "reversable", "tools.send_email", "did you mean 'reversible'"),
    ("stages.shadow.execute", ["write"], "stages.shadow.execute[0]", "unknown tool class"),
    ("stages.canary.approval_required", "irreversible", "stages.canary.approval_required", "must be a list"),
    ("sequence_rules.0.before", "lookup_user", "sequence_rules[0].before", "not in tools"),
    ("sequence_rules.0.then", "lookup_customer", "sequence_rules[0].then", "different tool"),
    ("sequence_rules.0", "lookup first", "sequence_rules[0]", "must be a mapping"),
    ("sequence_rules.0.after", "x", "sequence_rules[0].after", "unknown key"),
    ("sequence_rules.1.max_calls", {"send_mail": 1}, "sequence_rules[1].max_calls.send_mail", "not in tools"),
    (
        "sequence_rules.1.max_calls",
        {"send_email": -1},
        "sequence_rules[1].max_calls.send_email",
        "whole number",
    ),
    (
        "stages.twin.scenarios.refund-request.forbid",
        ["send_email"],
        "stages.twin.scenarios.refund-request.forbid",
        "both expected and forbidden",
    ),
    (
        "stages.twin.scenarios.refund-request.expect",
        ["lookup_custmer"],
        "stages.twin.scenarios.refund-request.expect[0]",
        "not in tools",
    ),
    ("stages.twin.scenarios.empty", {}, "stages.twin.scenarios.empty", "asserts nothing"),
    ("stages.twin.gate.min_pass_rate", 98, "stages.twin.gate.min_pass_rate", "between 0 and 1"),
    ("kill_switch.action.revert_to", "expansion", "kill_switch.action.revert_to", "unknown stage"),
    ("kill_switch.min_calls", 0, "kill_switch.min_calls", "whole number of at least 1"),
    ("alerts.by_severity.critcal", "kill", "alerts.by_severity.critcal", "did you mean 'critical'"),
    ("alerts.by_severity.critical", "explode", "alerts.by_severity.critical", "unknown action"),
    ("alerts.default", "page", "alerts.default", "unknown action"),
    ("gate.on_metrics_error", "panic", "gate.on_metrics_error", "expected one of: hold, rollback"),
    ("gate.queries", {"slow": {"query": "up"}}, "gate.queries.slow", "needs max, min or both"),
    (
        "gate.queries",
        {"odd": {"query": "up", "min": 2, "max": 1}},
        "gate.queries.odd.min",
        "must not be above",
    ),
    ("gate.queries", {"blank": {"max": 1}}, "gate.queries.blank.query", "is required"),
    ("stages.canary.gate.soak", "forever", "stages.canary.gate.soak", "duration"),
    ("stages.canary.gate.sok", "1h", "stages.canary.gate.sok", "did you mean 'soak'"),
    ("stages.staging", {}, "stages.staging", "unknown key"),
    ("approvals", ["15m"], "approvals", "must be a mapping"),
]


@pytest.mark.parametrize(("field", "value", "path", "message"), PROBLEMS, ids=[row[2] for row in PROBLEMS])
def test_each_problem_is_reported_with_its_field_path(
    field: str, value: object, path: str, message: str
) -> None:
    problems = validate_policy_text(mutated(field, value), file="x.yaml")
    assert [p for p in problems if p.path == path and message in p.message], problems


def test_the_spec_example_has_no_problems() -> None:
    assert validate_policy_text(EXAMPLE.read_text()) == []


def test_parse_policy_reports_all_problems_at_once() -> None:
    document = example()
    document["stages"]["canary"]["tiers"] = [5, 1]
    document["tools"]["send_email"] = "risky"
    document["approvals"]["expire_after"] = "15 minutes"
    with pytest.raises(PolicyError) as raised:
        parse_policy(yaml.safe_dump(document), file="p.yaml")
    paths = {problem.path for problem in raised.value.problems}
    assert paths == {"stages.canary.tiers[1]", "tools.send_email", "approvals.expire_after"}
    assert "p.yaml: tools.send_email: unknown tool class 'risky'" in str(raised.value)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("name: a\nagents: [\n", "invalid YAML at line 3"),
        ("name: a\n  agents: b\n", "invalid YAML at line 2"),
        ("name: a\nname: b\n", "duplicate key 'name'"),
        ("- name: a\n", "top level must be a mapping, not a list"),
        ("just text", "top level must be a mapping, not a string"),
        ("", "top level must be a mapping, not empty"),
    ],
)
def test_document_level_problems(text: str, fragment: str) -> None:
    (problem,) = validate_policy_text(text, file="bad.yaml")
    assert problem.path == "" and fragment in problem.message
    assert str(problem).startswith("bad.yaml: ")


def test_a_section_of_the_wrong_type_is_one_problem_not_one_per_key() -> None:
    problems = validate_policy_text("name: x\nagents: []\nstages: [1]\nstable_caps: 3\n")
    assert [str(p) for p in problems] == [
        "<string>: stages: must be a mapping, not a list",
        "<string>: stable_caps: must be a mapping, not a number",
    ]


def test_problem_str_is_file_path_message() -> None:
    problem = PolicyProblem("policies/x.yaml", "stages.canary.tiers[1]", "must be a number between 0 and 100")
    assert str(problem) == "policies/x.yaml: stages.canary.tiers[1]: must be a number between 0 and 100"


def test_oversized_policy_is_refused() -> None:
    (problem,) = validate_policy_text("# " + "x" * 1_000_001)
    assert "larger than" in problem.message


# -- files and directories -----------------------------------------------------------------


@pytest.mark.parametrize("path", sorted(POLICIES.glob("*.y*ml")), ids=lambda p: p.name)
def test_every_shipped_policy_validates(path: Path) -> None:
    policy = load_policy_file(path)
    assert isinstance(policy, Policy) and policy.expansion.tiers[-1] == 100


def test_shipped_policies_bind_each_agent_once() -> None:
    ok, problems = check_paths([str(POLICIES)])
    assert problems == []
    assert {name for _, policy, _ in ok for name in policy.agents} >= {
        "support-bot",
        "code-assistant",
        "billing-agent",
    }


def test_check_paths_expands_directories_and_reports_conflicts(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(MINIMAL.replace("agents: []", "agents: [bot]"))
    (tmp_path / "b.yml").write_text(MINIMAL.replace("agents: []", "agents: [other, bot]"))
    (tmp_path / "notes.txt").write_text("not a policy")
    ok, problems = check_paths([str(tmp_path), str(tmp_path / "a.yaml")])
    assert [(file, revision) for file, _, revision in ok] == [
        (str(tmp_path / "a.yaml"), policy_revision((tmp_path / "a.yaml").read_text()))
    ]
    assert [(p.file, p.path) for p in problems] == [
        (str(tmp_path / "b.yml"), "name"),
        (str(tmp_path / "b.yml"), "agents[1]"),
    ]


def test_check_paths_reports_missing_paths_and_empty_directories(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    ok, problems = check_paths([str(tmp_path / "missing.yaml"), str(tmp_path / "empty")])
    assert ok == []
    assert [p.message for p in problems] == [
        "no such file or directory",
        "holds no *.yaml or *.yml policy files",
    ]


def test_load_policy_file_rejects_non_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin.yaml"
    path.write_bytes(b"name: caf\xe9\n")
    with pytest.raises(PolicyError, match="not UTF-8"):
        load_policy_file(path)
