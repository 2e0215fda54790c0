"""Policy files: the typed, immutable policy model and its parser (SPEC §4).

A policy binds agents to a tool map, sequence rules, the four stages' tiers, caps and
gates, the kill switch, alert handling and approvals. `parse_policy` walks the whole
document and collects every problem with its field path before raising, so
`gatekeeper policy check` shows them all in one run. Units after parsing: durations are
float seconds (YAML `500ms`, `30s`, `10m`, `24h`, `1h30m`, `2d`), money is int
micro-dollars (YAML dollars, `0.50` -> 500_000), percentages are floats in (0, 100],
rates are floats in [0, 1].

Required: `name` and `agents` (both slugs `[a-z0-9][a-z0-9-]{0,62}`; `agents` may be
`[]`), `stages.canary.tiers`, `stages.canary.caps`, `stages.expansion.tiers`,
`stages.expansion.caps`, `stable_caps`; every caps mapping needs both of its keys.
Everything else has a default:

| field | default | meaning |
|---|---|---|
| tools | {} | tool -> read_only, reversible or irreversible; unnamed tools are irreversible |
| sequence_rules | [] | `{before: a, then: b}` denies b until a ran; `{max_calls: {tool: n}}` per session |
| stages.twin.gate.min_runs | 50 | twin scenario runs needed to leave twin |
| stages.twin.gate.min_pass_rate | 0.98 | share of twin runs whose assertions passed |
| stages.twin.gate.max_twin_age | 24h | oldest acceptable twin snapshot |
| stages.twin.scenarios | {} | name -> {expect: [tools in order], forbid: [tools]} |
| stages.shadow.traffic_percent | 100 | share of live sessions mirrored to the candidate |
| stages.shadow.execute | [read_only] | tool classes the shadow candidate really executes |
| stages.shadow.gate.min_sessions | 200 | shadow sessions needed to leave shadow |
| stages.shadow.gate.soak | 1h | minimum time in shadow |
| stages.shadow.gate.max_error_rate | 0.05 | candidate error rate in shadow |
| stages.shadow.gate.max_violation_rate | 0.01 | share of would-be denials (caps, sequence rules) |
| stages.shadow.gate.min_agreement | 0.9 | share of sessions whose tool calls match stable |
| stages.canary.approval_required | [irreversible] | tool classes that need a person in canary |
| stages.expansion.approval_required | [] | tool classes that need a person in expansion |
| stages.canary.gate, stages.expansion.gate | {} | keys merged over the top-level `gate` |
| gate.interval | 30s | how often the scheduler evaluates the tier gate |
| gate.window | 10m | PromQL range |
| gate.soak | 30m | minimum time at a tier before promotion |
| gate.min_sessions | 100 | candidate sessions in the window needed to judge |
| gate.max_error_rate | 0.02 | candidate tool-call error rate |
| gate.max_p95_latency | 2s | candidate p95 tool-call latency |
| gate.max_cost_per_session | 0.40 | candidate dollars per session |
| gate.failure_limit | 2 | consecutive failed evaluations before rollback |
| gate.on_metrics_error | hold | hold or rollback once error_limit is reached |
| gate.error_limit | 4 | consecutive metrics errors before on_metrics_error acts |
| gate.queries | {} | name -> {query, max and/or min}; `{agent}` `{version}` `{window}` are filled in |
| kill_switch.window | 60s | error-rate window |
| kill_switch.min_calls | 20 | calls in the window before the kill switch may trip |
| kill_switch.max_error_rate | 0.25 | error rate that trips it |
| kill_switch.action.revert_to | shadow | stage to revert to (twin, shadow or canary); state becomes killed |
| alerts.default | rollback | action for a firing alert: rollback (one tier), hold or kill |
| alerts.by_severity | {} | severity -> action; severities: critical, high, error, warning, medium, low, |
| | | info, page (matched case-insensitively) |
| approvals.expire_after | 15m | a pending approval expires after this |
"""

from __future__ import annotations

import difflib
import hashlib
import math
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal, cast

import yaml

ToolClass = Literal["read_only", "reversible", "irreversible"]
TOOL_CLASSES: tuple[str, ...] = ("read_only", "reversible", "irreversible")
STAGES: tuple[str, ...] = ("twin", "shadow", "canary", "expansion")
AlertAction = Literal["rollback", "hold", "kill"]
ALERT_ACTIONS: tuple[str, ...] = ("rollback", "hold", "kill")
SEVERITIES: tuple[str, ...] = ("critical", "high", "error", "warning", "medium", "low", "info", "page")
REVERT_STAGES: tuple[str, ...] = ("twin", "shadow", "canary")
SLUG = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
MICROS_PER_DOLLAR = 1_000_000
MAX_POLICY_BYTES = 1_000_000  # a policy is hand-written; anything bigger is a mistake or an attack


def _hash_fields(self: Any) -> int:
    """Hash a frozen dataclass whose mapping fields are read-only views, as equal mappings compare."""
    return hash(tuple(frozenset(v.items()) if isinstance(v, Mapping) else v for v in vars(self).values()))


@dataclass(frozen=True)
class Caps:
    tool_calls_per_session: int
    spend_per_session_micros: int


@dataclass(frozen=True)
class ExtraQuery:
    name: str
    query: str
    max: float | None
    min: float | None

    def render(self, *, agent: str, version: str, window: str) -> str:
        """Fill in the {agent} {version} {window} placeholders, leaving PromQL braces alone."""
        return self.query.replace("{agent}", agent).replace("{version}", version).replace("{window}", window)


@dataclass(frozen=True)
class TierGate:
    interval_s: float
    window_s: float
    soak_s: float
    min_sessions: int
    max_error_rate: float
    max_p95_latency_s: float
    max_cost_per_session_micros: int
    failure_limit: int
    on_metrics_error: Literal["hold", "rollback"]
    error_limit: int
    queries: tuple[ExtraQuery, ...]


@dataclass(frozen=True)
class Scenario:
    name: str
    expect: tuple[str, ...]
    forbid: tuple[str, ...]


@dataclass(frozen=True)
class TwinGate:
    min_runs: int
    min_pass_rate: float
    max_twin_age_s: float


@dataclass(frozen=True)
class TwinStage:
    gate: TwinGate
    scenarios: Mapping[str, Scenario]

    __hash__ = _hash_fields


@dataclass(frozen=True)
class ShadowGate:
    min_sessions: int
    soak_s: float
    max_error_rate: float
    max_violation_rate: float
    min_agreement: float


@dataclass(frozen=True)
class ShadowStage:
    traffic_percent: float
    execute: tuple[ToolClass, ...]
    gate: ShadowGate


@dataclass(frozen=True)
class TierStage:
    tiers: tuple[float, ...]
    caps: Caps
    approval_required: tuple[ToolClass, ...]
    gate: TierGate


@dataclass(frozen=True)
class BeforeRule:
    before: str
    then: str


@dataclass(frozen=True)
class MaxCallsRule:
    limits: Mapping[str, int]

    __hash__ = _hash_fields


SequenceRule = BeforeRule | MaxCallsRule


@dataclass(frozen=True)
class KillSwitch:
    window_s: float
    min_calls: int
    max_error_rate: float
    revert_to: str


@dataclass(frozen=True)
class AlertPolicy:
    default: AlertAction
    by_severity: Mapping[str, AlertAction]

    __hash__ = _hash_fields

    def action_for(self, severity: str | None) -> AlertAction:
        """Return the action for an alert of this severity (case-insensitive), else the default."""
        return self.by_severity.get((severity or "").lower(), self.default)


@dataclass(frozen=True)
class ApprovalPolicy:
    expire_after_s: float


@dataclass(frozen=True)
class Policy:
    name: str
    agents: tuple[str, ...]
    tools: Mapping[str, ToolClass]
    sequence_rules: tuple[SequenceRule, ...]
    twin: TwinStage
    shadow: ShadowStage
    canary: TierStage
    expansion: TierStage
    stable_caps: Caps
    gate: TierGate
    kill_switch: KillSwitch
    alerts: AlertPolicy
    approvals: ApprovalPolicy
    file: str = "<string>"
    revision: str = ""

    __hash__ = _hash_fields

    def tool_class(self, tool: str) -> ToolClass:
        """Return the tool's class; a tool the policy does not name is irreversible."""
        return self.tools.get(tool, "irreversible")

    def tiers(self, stage: str) -> tuple[float, ...]:
        """Return the traffic percentages of a stage's tiers."""
        if stage == "twin":
            return (0.0,)
        if stage == "shadow":
            return (self.shadow.traffic_percent,)
        if stage in ("canary", "expansion"):
            return cast(TierStage, getattr(self, stage)).tiers
        raise ValueError(f"unknown stage {stage!r}")


@dataclass(frozen=True)
class PolicyProblem:
    file: str
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}: {self.path}: {self.message}" if self.path else f"{self.file}: {self.message}"


class PolicyError(Exception):
    """A policy file has one or more problems; `problems` lists them all."""

    def __init__(self, problems: Sequence[PolicyProblem]) -> None:
        self.problems = tuple(problems)
        super().__init__("\n".join(str(problem) for problem in self.problems))


# -- units --------------------------------------------------------------------------------

_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION = re.compile(r"(?:\d+(?:\.\d+)?(?:ms|s|m|h|d))+")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")


def parse_duration(text: str) -> float:
    """Convert a duration such as 30s, 10m, 24h, 1h30m or 500ms into seconds."""
    if not isinstance(text, str) or not (text.strip() == "0" or _DURATION.fullmatch(text.strip())):
        raise ValueError(f"must be a duration such as 30s, 10m or 24h, not {text!r}")
    parts = _DURATION_PART.findall(text.strip())
    return sum(float(number) * _UNIT_SECONDS[unit] for number, unit in parts)


def parse_money(value: object) -> int:
    """Convert a dollar amount into exact integer micro-dollars."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str, Decimal)):
        raise ValueError(f"must be an amount in dollars such as 0.50, not {value!r}")
    try:
        dollars = Decimal(str(value).strip())
    except InvalidOperation:
        raise ValueError(f"must be an amount in dollars such as 0.50, not {value!r}") from None
    if not dollars.is_finite() or dollars < 0:
        raise ValueError(f"must be a non-negative amount in dollars, not {value!r}")
    micros = dollars * MICROS_PER_DOLLAR
    if micros != micros.to_integral_value():
        raise ValueError(f"must be a whole number of micro-dollars (6 decimal places at most), not {value!r}")
    return int(micros)


def policy_revision(text: str) -> str:
    """Return the policy's content hash: the first 12 hex digits of sha256 of its UTF-8 bytes."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


# -- the reader: walks a YAML document, converting values and collecting problems --------

_REQUIRED: Any = object()
_NONE: Mapping[str, Any] = MappingProxyType({})
Convert = Callable[["_Reader", object, str], Any]
Fields = Mapping[str, tuple[str, Convert, Any]]  # YAML key -> (attribute, converter, raw default)


class _Reader:
    def __init__(self, file: str) -> None:
        self.file = file
        self.problems: list[PolicyProblem] = []
        self.top_gate: dict[str, Any] = {}  # stage gates merge over it, so _POLICY parses `gate` first

    def problem(self, path: str, message: str) -> None:
        self.problems.append(PolicyProblem(self.file, path, message))

    def mapping(self, value: object, path: str) -> dict[Any, Any] | None:
        if value is None:  # `twin:` with nothing under it means "all defaults"
            return {}
        if not isinstance(value, dict):
            self.problem(path, f"must be a mapping, not {_kind(value)}")
            return None
        return value

    def unknown_keys(self, raw: Mapping[Any, Any], path: str, known: Sequence[str]) -> None:
        for key in raw:
            if key not in known:
                close = difflib.get_close_matches(str(key), known, n=1)
                hint = f" (did you mean '{close[0]}'?)" if close else f"; expected one of: {', '.join(known)}"
                self.problem(_join(path, str(key)), f"unknown key '{key}'{hint}")

    def section(self, value: object, path: str, fields: Fields, inherited: Mapping[str, Any] = _NONE) -> dict:
        raw = self.mapping(value, path)
        if raw is None:  # one problem for the whole section, not one per missing key
            return dict.fromkeys(attr for attr, _, _ in fields.values())
        self.unknown_keys(raw, path, list(fields))
        out: dict[str, Any] = {}
        for key, (attr, convert, default) in fields.items():
            if key in raw:
                out[attr] = convert(self, raw[key], _join(path, key))
            elif attr in inherited:
                out[attr] = inherited[attr]
            elif default is _REQUIRED:
                self.problem(_join(path, key), "is required")
                out[attr] = None  # keeps the walk going so later checks can report more
            else:
                out[attr] = convert(self, default, _join(path, key))
        return out


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _kind(value: object) -> str:
    names = {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean", int: "a number"}
    names.update({float: "a number", type(None): "empty"})
    return names.get(type(value), f"a {type(value).__name__}")


def _simple(check: Callable[[object], Any]) -> Convert:
    def convert(reader: _Reader, value: object, path: str) -> Any:
        try:
            return check(value)
        except ValueError as exc:
            reader.problem(path, str(exc))
            return None

    return convert


def _number(value: object, low: float, high: float, *, low_open: bool = False) -> float:
    in_range = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if in_range and (value > low if low_open else value >= low) and value <= high:  # type: ignore[operator]
        return float(value)  # type: ignore[arg-type]
    raise ValueError(f"must be a number between {low:g} and {high:g}, not {value!r}")


def _rate(value: object) -> float:
    return _number(value, 0, 1)


def _percent(value: object) -> float:
    return _number(value, 0, 100, low_open=True)


def _count(minimum: int) -> Convert:
    def check(value: object) -> int:
        if isinstance(value, int) and not isinstance(value, bool) and value >= minimum:
            return value
        raise ValueError(f"must be a whole number of at least {minimum}, not {value!r}")

    return _simple(check)


def _duration(*, positive: bool) -> Convert:
    def check(value: object) -> float:
        seconds = parse_duration(value)  # type: ignore[arg-type]
        if positive and seconds <= 0:
            raise ValueError(f"must be longer than zero, not {value!r}")
        return seconds

    return _simple(check)


def _choice(options: Sequence[str], what: str = "value") -> Callable[[object], str]:
    def check(value: object) -> str:
        if isinstance(value, str) and value in options:
            return value
        close = difflib.get_close_matches(str(value), options, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise ValueError(f"unknown {what} {value!r}{hint}; expected one of: {', '.join(options)}")

    return check


def _text(value: object) -> str:
    if isinstance(value, str) and value.strip():
        return value
    raise ValueError(f"must be a non-empty string, not {_kind(value)}")


def _slug(value: object) -> str:
    if isinstance(value, str) and SLUG.fullmatch(value):
        return value
    raise ValueError(f"must be a slug of lowercase letters, digits and dashes (at most 63), not {value!r}")


def _list_of(item: Convert, *, unique: bool = False, non_empty: bool = False) -> Convert:
    def convert(reader: _Reader, value: object, path: str) -> tuple[Any, ...] | None:
        if not isinstance(value, list):
            reader.problem(path, f"must be a list, not {_kind(value)}")
            return None
        if non_empty and not value:
            reader.problem(path, "must not be empty")
            return None
        items = tuple(item(reader, entry, f"{path}[{index}]") for index, entry in enumerate(value))
        for index, entry in enumerate(items):
            if unique and entry is not None and entry in items[:index]:
                reader.problem(f"{path}[{index}]", f"{entry!r} is listed twice")
        return items

    return convert


def _map_of(item: Convert, *, key: Callable[[object], str] = _text) -> Convert:
    def convert(reader: _Reader, value: object, path: str) -> Mapping[str, Any]:
        out: dict[str, Any] = {}
        for name, entry in (reader.mapping(value, path) or {}).items():
            try:
                out[key(name)] = item(reader, entry, _join(path, str(name)))
            except ValueError as exc:
                reader.problem(_join(path, str(name)), str(exc))
        return MappingProxyType(out)

    return convert


def _build(cls: Callable[..., Any], fields: Fields, **extra: Any) -> Convert:
    def convert(reader: _Reader, value: object, path: str) -> Any:
        return cls(**reader.section(value, path, fields), **extra)

    return convert


def _named(reader: _Reader, value: object, path: str, fields: Fields) -> list[tuple[str, str, dict]]:
    """Walk a mapping of name -> section, returning (name, path, converted fields) for each."""
    out = []
    for name, raw in (reader.mapping(value, path) or {}).items():
        if not isinstance(name, str) or not name.strip():
            reader.problem(_join(path, str(name)), "name must be a non-empty string")
        out.append((str(name), _join(path, str(name)), reader.section(raw, _join(path, str(name)), fields)))
    return out


def _optional_number(value: object) -> float | None:
    return None if value is None else _number(value, -math.inf, math.inf)


_QUERY: Fields = {
    "query": ("query", _simple(_text), _REQUIRED),
    "max": ("max", _simple(_optional_number), None),
    "min": ("min", _simple(_optional_number), None),
}


def _queries(reader: _Reader, value: object, path: str) -> tuple[ExtraQuery, ...]:
    queries = []
    for name, sub, fields in _named(reader, value, path, _QUERY):
        low, high = fields.get("min"), fields.get("max")
        if low is None and high is None:
            reader.problem(sub, "needs max, min or both")
        elif low is not None and high is not None and low > high:
            reader.problem(f"{sub}.min", f"must not be above max ({high:g})")
        queries.append(ExtraQuery(name=name, **fields))
    return tuple(queries)


_SCENARIO: Fields = {
    "expect": ("expect", _list_of(_simple(_text)), []),
    "forbid": ("forbid", _list_of(_simple(_text), unique=True), []),
}


def _scenarios(reader: _Reader, value: object, path: str) -> Mapping[str, Scenario]:
    scenarios = {}
    for name, sub, fields in _named(reader, value, path, _SCENARIO):
        expect, forbid = fields.get("expect") or (), fields.get("forbid") or ()
        for tool in sorted({tool for tool in expect if tool in forbid}):
            reader.problem(f"{sub}.forbid", f"'{tool}' is both expected and forbidden")
        if not expect and not forbid and "expect" in fields and "forbid" in fields:
            reader.problem(sub, "asserts nothing: give expect, forbid or both")
        scenarios[name] = Scenario(name=name, **fields)
    return MappingProxyType(scenarios)


def _tiers(reader: _Reader, value: object, path: str) -> tuple[float, ...] | None:
    tiers = _list_of(_simple(_percent), non_empty=True)(reader, value, path)
    for index in range(1, len(tiers or ())):
        before, tier = tiers[index - 1], tiers[index]
        if before is not None and tier is not None and tier <= before:
            reader.problem(f"{path}[{index}]", f"must be greater than the tier before it ({before:g})")
    return cast("tuple[float, ...] | None", tiers)


_BEFORE: Fields = {
    "before": ("before", _simple(_text), _REQUIRED),
    "then": ("then", _simple(_text), _REQUIRED),
}


def _sequence_rule(reader: _Reader, value: object, path: str) -> SequenceRule | None:
    if not isinstance(value, dict):
        reader.problem(path, f"must be a mapping {{before, then}} or {{max_calls}}, not {_kind(value)}")
        return None
    if "max_calls" in value:
        reader.unknown_keys(value, path, ["max_calls"])
        return MaxCallsRule(limits=_map_of(_count(0))(reader, value["max_calls"], f"{path}.max_calls"))
    rule = BeforeRule(**reader.section(value, path, _BEFORE))
    if rule.before is not None and rule.before == rule.then:
        reader.problem(f"{path}.then", "must name a different tool than before")
    return rule


_CAPS: Fields = {
    "tool_calls_per_session": ("tool_calls_per_session", _count(1), _REQUIRED),
    "spend_per_session": ("spend_per_session_micros", _simple(parse_money), _REQUIRED),
}
_GATE: Fields = {
    "interval": ("interval_s", _duration(positive=True), "30s"),
    "window": ("window_s", _duration(positive=True), "10m"),
    "soak": ("soak_s", _duration(positive=False), "30m"),
    "min_sessions": ("min_sessions", _count(1), 100),
    "max_error_rate": ("max_error_rate", _simple(_rate), 0.02),
    "max_p95_latency": ("max_p95_latency_s", _duration(positive=True), "2s"),
    "max_cost_per_session": ("max_cost_per_session_micros", _simple(parse_money), 0.40),
    "failure_limit": ("failure_limit", _count(1), 2),
    "on_metrics_error": ("on_metrics_error", _simple(_choice(("hold", "rollback"))), "hold"),
    "error_limit": ("error_limit", _count(1), 4),
    "queries": ("queries", _queries, {}),
}


def _top_gate(reader: _Reader, value: object, path: str) -> TierGate:
    reader.top_gate = reader.section(value, path, _GATE)
    return TierGate(**reader.top_gate)


def _stage_gate(reader: _Reader, value: object, path: str) -> TierGate:
    """Merge a stage's own gate keys over the top-level gate (parsed first, see _POLICY)."""
    return TierGate(**reader.section(value, path, _GATE, reader.top_gate))


_CLASSES = _list_of(_simple(_choice(TOOL_CLASSES, "tool class")), unique=True)


def _tier_stage(approval_required: list[str]) -> Convert:
    return _build(
        TierStage,
        {
            "tiers": ("tiers", _tiers, _REQUIRED),
            "caps": ("caps", _build(Caps, _CAPS), _REQUIRED),
            "approval_required": ("approval_required", _CLASSES, approval_required),
            "gate": ("gate", _stage_gate, {}),
        },
    )


_TWIN: Fields = {
    "gate": (
        "gate",
        _build(
            TwinGate,
            {
                "min_runs": ("min_runs", _count(1), 50),
                "min_pass_rate": ("min_pass_rate", _simple(_rate), 0.98),
                "max_twin_age": ("max_twin_age_s", _duration(positive=True), "24h"),
            },
        ),
        {},
    ),
    "scenarios": ("scenarios", _scenarios, {}),
}
_SHADOW: Fields = {
    "traffic_percent": ("traffic_percent", _simple(_percent), 100),
    "execute": ("execute", _CLASSES, ["read_only"]),
    "gate": (
        "gate",
        _build(
            ShadowGate,
            {
                "min_sessions": ("min_sessions", _count(1), 200),
                "soak": ("soak_s", _duration(positive=False), "1h"),
                "max_error_rate": ("max_error_rate", _simple(_rate), 0.05),
                "max_violation_rate": ("max_violation_rate", _simple(_rate), 0.01),
                "min_agreement": ("min_agreement", _simple(_rate), 0.9),
            },
        ),
        {},
    ),
}
_STAGES: Fields = {
    "twin": ("twin", _build(TwinStage, _TWIN), {}),
    "shadow": ("shadow", _build(ShadowStage, _SHADOW), {}),
    "canary": ("canary", _tier_stage(["irreversible"]), _REQUIRED),
    "expansion": ("expansion", _tier_stage([]), _REQUIRED),
}
_REVERT: Fields = {"revert_to": ("revert_to", _simple(_choice(REVERT_STAGES, "stage")), "shadow")}
_ACTION = _simple(_choice(ALERT_ACTIONS, "action"))
_POLICY: Fields = {  # `gate` comes before `stages`: stage gates merge over it
    "name": ("name", _simple(_slug), _REQUIRED),
    "agents": ("agents", _list_of(_simple(_slug), unique=True), _REQUIRED),
    "tools": ("tools", _map_of(_simple(_choice(TOOL_CLASSES, "tool class"))), {}),
    "sequence_rules": ("sequence_rules", _list_of(_sequence_rule), []),
    "gate": ("gate", _top_gate, {}),
    "stages": ("stages", lambda reader, value, path: reader.section(value, path, _STAGES), _REQUIRED),
    "stable_caps": ("stable_caps", _build(Caps, _CAPS), _REQUIRED),
    "kill_switch": (
        "kill_switch",
        _build(
            KillSwitch,
            {
                "window": ("window_s", _duration(positive=True), "60s"),
                "min_calls": ("min_calls", _count(1), 20),
                "max_error_rate": ("max_error_rate", _simple(_rate), 0.25),
                "action": (
                    "revert_to",
                    lambda r, value, path: r.section(value, path, _REVERT)["revert_to"],
                    {},
                ),
            },
        ),
        {},
    ),
    "alerts": (
        "alerts",
        _build(
            AlertPolicy,
            {
                "default": ("default", _ACTION, "rollback"),
                "by_severity": ("by_severity", _map_of(_ACTION, key=_choice(SEVERITIES, "severity")), {}),
            },
        ),
        {},
    ),
    "approvals": (
        "approvals",
        _build(
            ApprovalPolicy,
            {
                "expire_after": ("expire_after_s", _duration(positive=True), "15m"),
            },
        ),
        {},
    ),
}


# -- checks that span sections -----------------------------------------------------------


def _check_tiers(reader: _Reader, stages: Mapping[str, Any]) -> None:
    low = getattr(stages.get("canary"), "tiers", None) or ()
    high = getattr(stages.get("expansion"), "tiers", None) or ()
    if high and high[-1] is not None and high[-1] != 100:
        reader.problem(f"stages.expansion.tiers[{len(high) - 1}]", "the last expansion tier must be 100")
    for index, tier in enumerate(low):
        if high and high[0] is not None and tier is not None and tier >= high[0]:
            message = f"must be below the first expansion tier ({high[0]:g})"
            reader.problem(f"stages.canary.tiers[{index}]", message)


def _check_tools_named(reader: _Reader, values: Mapping[str, Any]) -> None:
    """Sequence rules and scenarios must name tools from `tools`: a typo would silently never match."""
    tools = values.get("tools") or {}
    named: list[tuple[str, str]] = []
    for index, rule in enumerate(values.get("sequence_rules") or ()):
        if isinstance(rule, BeforeRule):
            named += [(f"sequence_rules[{index}].{key}", getattr(rule, key)) for key in ("before", "then")]
        elif isinstance(rule, MaxCallsRule):
            named += [(f"sequence_rules[{index}].max_calls.{tool}", tool) for tool in rule.limits]
    twin = (values.get("stages") or {}).get("twin")
    for name, scenario in (getattr(twin, "scenarios", None) or {}).items():
        for key in ("expect", "forbid"):
            path = f"stages.twin.scenarios.{name}.{key}"
            named += [(f"{path}[{i}]", tool) for i, tool in enumerate(getattr(scenario, key) or ())]
    for path, tool in named:
        if isinstance(tool, str) and tool not in tools:
            reader.problem(path, f"tool '{tool}' is not in tools; name it there with its class")


# -- entry points ------------------------------------------------------------------------


class _StrictLoader(yaml.SafeLoader):
    """A safe loader that rejects duplicate keys, which plain YAML silently overwrites."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[object] = set()
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                continue
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                mark = key_node.start_mark
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key '{key}'", mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


def _load_yaml(reader: _Reader, text: str) -> dict[Any, Any] | None:
    if len(text.encode("utf-8")) > MAX_POLICY_BYTES:
        reader.problem("", f"is larger than {MAX_POLICY_BYTES} bytes")
        return None
    try:
        document = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        reader.problem("", f"invalid YAML{where}: {exc.problem}")
        return None
    except yaml.YAMLError as exc:
        reader.problem("", f"invalid YAML: {exc}")
        return None
    if not isinstance(document, dict):
        reader.problem("", f"the top level must be a mapping, not {_kind(document)}")
        return None
    return document


def _read(text: str, file: str) -> tuple[Policy | None, list[PolicyProblem]]:
    reader = _Reader(file)
    document = _load_yaml(reader, text)
    if document is None:
        return None, reader.problems
    values = reader.section(document, "", _POLICY)
    _check_tiers(reader, values.get("stages") or {})
    _check_tools_named(reader, values)
    if reader.problems:
        return None, reader.problems
    stages = values.pop("stages")
    return Policy(**values, **stages, file=file, revision=policy_revision(text)), []


def validate_policy_text(text: str, *, file: str = "<string>") -> list[PolicyProblem]:
    """Return every problem in a policy document; an empty list means it is valid."""
    return _read(text, file)[1]


def parse_policy(text: str, *, file: str = "<string>") -> Policy:
    """Parse a policy document, raising PolicyError that lists every problem found."""
    policy, problems = _read(text, file)
    if policy is None:
        raise PolicyError(problems)
    return policy


def load_policy_file(path: str | os.PathLike[str]) -> Policy:
    """Read and parse one policy file (UTF-8), raising PolicyError that lists every problem."""
    try:
        text = Path(path).read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PolicyError([PolicyProblem(str(path), "", f"is not UTF-8 text: {exc}")]) from None
    return parse_policy(text, file=str(path))


def _expand(paths: Sequence[str], problems: list[PolicyProblem]) -> list[str]:
    files: dict[Path, str] = {}  # resolved -> as the user spelled it, so each file is checked once
    for given in paths:
        path = Path(given)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())
            if not found:
                problems.append(PolicyProblem(str(given), "", "holds no *.yaml or *.yml policy files"))
            files.update((p.resolve(), str(p)) for p in found if p.resolve() not in files)
        elif path.exists():
            files.setdefault(path.resolve(), str(given))
        else:
            problems.append(PolicyProblem(str(given), "", "no such file or directory"))
    return list(files.values())


def _without_conflicts(
    loaded: list[tuple[str, Policy, str]], problems: list[PolicyProblem]
) -> tuple[list[tuple[str, Policy, str]], list[PolicyProblem]]:
    """Drop policies that reuse a policy name or bind an agent another policy already binds."""
    names: dict[str, str] = {}
    owners: dict[str, str] = {}
    ok = []
    for file, policy, revision in loaded:
        found = [
            PolicyProblem(file, f"agents[{i}]", f"agent '{agent}' is already bound by {owners[agent]}")
            for i, agent in enumerate(policy.agents)
            if agent in owners
        ]
        if policy.name in names:
            message = f"policy name '{policy.name}' is already used in {names[policy.name]}"
            found.insert(0, PolicyProblem(file, "name", message))
        names.setdefault(policy.name, file)
        for agent in policy.agents:
            owners.setdefault(agent, f"policy '{policy.name}' in {file}")
        problems.extend(found)
        if not found:
            ok.append((file, policy, revision))
    return ok, problems


def check_paths(paths: Sequence[str]) -> tuple[list[tuple[str, Policy, str]], list[PolicyProblem]]:
    """Validate policy files and directories of them; return the valid ones and every problem."""
    problems: list[PolicyProblem] = []
    loaded = []
    for file in _expand(paths, problems):
        try:
            policy, found = _read(Path(file).read_bytes().decode("utf-8"), file)
        except (OSError, UnicodeDecodeError) as exc:
            policy, found = None, [PolicyProblem(file, "", f"cannot be read: {exc}")]
        problems.extend(found)
        if policy is not None:
            loaded.append((file, policy, policy.revision))
    return _without_conflicts(loaded, problems)
