"""`gatekeeper policy schema`: the JSON Schema generated from the pydantic policy format, and the shipped copy."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from click.testing import CliRunner

from gatekeeper.cli.policy_commands import policy
from gatekeeper.policy_files import load_policy_file, parse_policy, validate_policy_text
from tests.support.policy_texts import POLICIES

SHIPPED = POLICIES / "policy.schema.json"
MODELINE = "# yaml-language-server: $schema=policy.schema.json\n"


def printed_schema() -> dict[str, Any]:
    result = CliRunner().invoke(policy, ["schema"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def validator() -> jsonschema.Draft202012Validator:
    schema = printed_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def test_the_shipped_schema_is_what_the_command_prints() -> None:
    result = CliRunner().invoke(policy, ["schema"])
    assert result.exit_code == 0
    assert SHIPPED.read_text(encoding="utf-8") == result.stdout, "run: gatekeeper policy schema > " + str(SHIPPED)


@pytest.mark.parametrize("path", sorted(POLICIES.glob("*.y*ml")), ids=lambda p: p.name)
def test_every_shipped_policy_names_the_schema_and_validates_against_it(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    assert text.startswith(MODELINE)
    assert list(validator().iter_errors(yaml.safe_load(text))) == []


def support_default() -> dict[str, Any]:
    return yaml.safe_load((POLICIES / "support-default.yaml").read_text(encoding="utf-8"))


def changed(path: str, value: object) -> dict[str, Any]:
    document = copy.deepcopy(support_default())
    *parents, last = path.split(".")
    node = document
    for key in parents:
        node = node.setdefault(key, {})
    if value is None:
        del node[last]
    else:
        node[last] = value
    return document


BROKEN = [
    ("tols", {"a": "read_only"}),  # unknown key
    ("gate.intervall", "30s"),
    ("gate.window", "10 minutes"),
    ("gate.max_error_rate", 2),
    ("tools.send_email", "dangerous"),
    ("tools.refund_payment", {"class": "irreversible", "price": 1}),
    ("tools.refund_payment", {"cost": 0.02}),
    ("stages.canary.tiers", []),
    ("stages.canary.tiers", [0, 5]),
    ("stages.shadow.execute", ["write"]),
    ("stable_caps", None),  # required
    ("name", "Support Default"),
    ("agents", ["bot", "bot"]),
    ("kill_switch.action", {"revert_to": "expansion"}),
    ("alerts.by_severity", {"critcal": "kill"}),
    ("approvals.expire_after", 900),
    ("stages.canary.caps.spend_per_session", -1),
    ("gate.min_sessions", 0),
]


@pytest.mark.parametrize(("path", "value"), BROKEN, ids=[f"{p}={v!r}" for p, v in BROKEN])
def test_the_schema_rejects_a_broken_policy_as_policy_check_does(path: str, value: object) -> None:
    document = changed(path, value)
    assert list(validator().iter_errors(document)), "the schema accepted it"
    assert validate_policy_text(yaml.safe_dump(document)), "policy check accepted it"


def test_the_schema_describes_fields_and_their_defaults_in_yaml_units() -> None:
    schema = printed_schema()
    gate = schema["$defs"]["GateFormat"]["properties"]
    assert (gate["soak"]["default"], gate["max_cost_per_session"]["default"], gate["min_sessions"]["default"]) == (
        "30m", 0.4, 100)
    assert "scheduler" in gate["interval"]["description"]
    assert schema["additionalProperties"] is False
    assert set(schema["required"]) == {"name", "agents", "stages", "stable_caps"}
    # A stage's gate inherits from the top-level gate, so the schema claims no defaults for it.
    assert all("default" not in field for field in schema["$defs"]["StageGateFormat"]["properties"].values())


def test_a_tool_may_give_its_cost_per_call() -> None:
    loaded = load_policy_file(POLICIES / "billing.yaml")
    assert (loaded.tool_class("issue_refund"), loaded.tool_cost("issue_refund")) == ("irreversible", 20_000)
    assert loaded.tool_cost("get_invoice") is None and loaded.tool_cost("unnamed") is None
    spelled_out = parse_policy(yaml.safe_dump(changed("tools.search_kb", {"class": "read_only"})))
    assert spelled_out.tool_cost("search_kb") is None


@pytest.mark.parametrize(("entry", "problem"), [
    ({"class": "risky", "cost": 1}, "tools.refund_payment.class: unknown tool class 'risky'"),
    ({"cost": 0.02}, "tools.refund_payment.class: is required"),
    ({"class": "irreversible", "cost": -1}, "tools.refund_payment.cost: must be a non-negative amount in dollars"),
    ({"class": "irreversible", "costs": 1}, "tools.refund_payment.costs: unknown key 'costs' (did you mean 'cost'?)"),
    (["irreversible"], "tools.refund_payment: unknown tool class ['irreversible']"),
])
def test_tool_entry_problems_name_the_field(entry: object, problem: str) -> None:
    problems = [f"{p.path}: {p.message}" for p in validate_policy_text(yaml.safe_dump(changed("tools.refund_payment",
                                                                                              entry)))]
    assert len(problems) == 1 and problems[0].startswith(problem), problems


def readme_defaults() -> list[tuple[str, str]]:
    """Return (field, default) of every row of the README's policy table."""
    text = (POLICIES.parent / "README.md").read_text(encoding="utf-8")
    table = text.split("| field | default | meaning |", 1)[1].split("\n\n", 1)[0]
    rows = [line.split("|")[1:3] for line in table.splitlines()[2:] if line.startswith("| ") and "*" not in line]
    return [(field.strip(), default.strip()) for fields, default in rows for field in fields.split(",")]


def schema_field(schema: dict[str, Any], path: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Return a field's schema and the schema of the section that holds it."""
    section, field = schema, schema
    for part in path.split("."):
        section = field
        while "$ref" in section or "anyOf" in section:
            ref = section.get("$ref") or next(m["$ref"] for m in section["anyOf"] if "$ref" in m)
            section = schema["$defs"][ref.rsplit("/", 1)[1]]
        field = section["properties"][part]
    return field, section


@pytest.mark.parametrize(("field", "default"), readme_defaults(), ids=lambda value: value)
def test_the_readme_table_states_the_models_defaults(field: str, default: str) -> None:
    spec, section = schema_field(printed_schema(), field)
    if default == "required":
        assert "default" not in spec and field.rsplit(".", 1)[-1] in section["required"]
    else:
        assert spec["default"] == (None if default == "none" else yaml.safe_load(default))
