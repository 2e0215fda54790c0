"""How a policy's YAML document maps onto the policy model: the reader and its field tables.

`read_document` walks the whole document with a `_Reader`, which converts each value and
collects every problem with its field path instead of stopping at the first. Each section
is a field table (YAML key -> attribute, converter, raw default); defaults are written in
YAML units and go through the same converters as given values. The defaults are listed in
the `gatekeeper.core.policy` docstring; keep the two in step.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Any, cast

from gatekeeper.core.policy import (
    ALERT_ACTIONS,
    REVERT_STAGES,
    SEVERITIES,
    SLUG,
    TOOL_CLASSES,
    AlertPolicy,
    ApprovalPolicy,
    BeforeRule,
    Caps,
    CompareSpec,
    ExtraQuery,
    KillSwitch,
    MaxCallsRule,
    Policy,
    PolicyProblem,
    Scenario,
    SequenceRule,
    ShadowGate,
    ShadowStage,
    TierGate,
    TierStage,
    TwinGate,
    TwinStage,
    parse_duration,
    parse_money,
)

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


_COMPARE_METRICS = ("error_rate", "session_error_rate", "p95_latency", "cost_per_session")
_MARGIN: Fields = {"max_increase": ("max_increase", _simple(lambda v: _number(v, 0, 100)), _REQUIRED)}


def _compare(reader: _Reader, value: object, path: str) -> CompareSpec | None:
    """Read `gate.compare`: metric -> {max_increase}, and confidence (SPEC §10)."""
    if value is None:
        return None
    raw = reader.mapping(value, path)
    if raw is None:
        return None
    reader.unknown_keys(raw, path, [*_COMPARE_METRICS, "confidence"])
    margins = tuple((metric, reader.section(raw[metric], _join(path, metric), _MARGIN)["max_increase"])
                    for metric in _COMPARE_METRICS if metric in raw)
    confidence = _simple(lambda v: _number(v, 0.5, 0.9999))(reader, raw.get("confidence", 0.95),
                                                             _join(path, "confidence"))
    if not margins and not [k for k in raw if k not in _COMPARE_METRICS and k != "confidence"]:
        reader.problem(path, f"compares nothing: name at least one of {', '.join(_COMPARE_METRICS)}")
    return CompareSpec(margins=margins, confidence=confidence)


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
    "max_overrun_rate": ("max_overrun_rate", _simple(_rate), 0.05),
    "failure_limit": ("failure_limit", _count(1), 2),
    "on_metrics_error": ("on_metrics_error", _simple(_choice(("hold", "rollback"))), "hold"),
    "error_limit": ("error_limit", _count(1), 4),
    "queries": ("queries", _queries, {}),
    "compare": ("compare", _compare, None),
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


_TWIN_GATE: Fields = {
    "min_runs": ("min_runs", _count(1), 50),
    "min_pass_rate": ("min_pass_rate", _simple(_rate), 0.98),
    "max_twin_age": ("max_twin_age_s", _duration(positive=True), "24h"),
}
_TWIN: Fields = {
    "gate": ("gate", _build(TwinGate, _TWIN_GATE), {}),
    "scenarios": ("scenarios", _scenarios, {}),
}
_SHADOW_GATE: Fields = {
    "min_sessions": ("min_sessions", _count(1), 200),
    "soak": ("soak_s", _duration(positive=False), "1h"),
    "max_error_rate": ("max_error_rate", _simple(_rate), 0.05),
    "max_violation_rate": ("max_violation_rate", _simple(_rate), 0.01),
    "min_agreement": ("min_agreement", _simple(_rate), 0.9),
}
_SHADOW: Fields = {
    "traffic_percent": ("traffic_percent", _simple(_percent), 100),
    "execute": ("execute", _CLASSES, ["read_only"]),
    "gate": ("gate", _build(ShadowGate, _SHADOW_GATE), {}),
}
_STAGES: Fields = {
    "twin": ("twin", _build(TwinStage, _TWIN), {}),
    "shadow": ("shadow", _build(ShadowStage, _SHADOW), {}),
    "canary": ("canary", _tier_stage(["irreversible"]), _REQUIRED),
    "expansion": ("expansion", _tier_stage([]), _REQUIRED),
}
_REVERT: Fields = {"revert_to": ("revert_to", _simple(_choice(REVERT_STAGES, "stage")), "shadow")}
_KILL_SWITCH: Fields = {
    "window": ("window_s", _duration(positive=True), "60s"),
    "min_calls": ("min_calls", _count(1), 20),
    "max_error_rate": ("max_error_rate", _simple(_rate), 0.25),
    "action": ("revert_to", lambda r, value, path: r.section(value, path, _REVERT)["revert_to"], {}),
}
_ACTION = _simple(_choice(ALERT_ACTIONS, "action"))
_ALERTS: Fields = {
    "default": ("default", _ACTION, "rollback"),
    "by_severity": ("by_severity", _map_of(_ACTION, key=_choice(SEVERITIES, "severity")), {}),
}
_APPROVALS: Fields = {
    "expire_after": ("expire_after_s", _duration(positive=True), "15m"),
    "redact": ("redact", _list_of(_simple(_text), unique=True), []),
}
_POLICY: Fields = {  # `gate` comes before `stages`: stage gates merge over it
    "name": ("name", _simple(_slug), _REQUIRED),
    "agents": ("agents", _list_of(_simple(_slug), unique=True), _REQUIRED),
    "tools": ("tools", _map_of(_simple(_choice(TOOL_CLASSES, "tool class"))), {}),
    "sequence_rules": ("sequence_rules", _list_of(_sequence_rule), []),
    "gate": ("gate", _top_gate, {}),
    "stages": ("stages", lambda reader, value, path: reader.section(value, path, _STAGES), _REQUIRED),
    "stable_caps": ("stable_caps", _build(Caps, _CAPS), _REQUIRED),
    "kill_switch": ("kill_switch", _build(KillSwitch, _KILL_SWITCH), {}),
    "alerts": ("alerts", _build(AlertPolicy, _ALERTS), {}),
    "approvals": ("approvals", _build(ApprovalPolicy, _APPROVALS), {}),
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


# -- entry point -------------------------------------------------------------------------


def read_document(document: object, file: str, *, revision: str) -> tuple[Policy | None, list[PolicyProblem]]:
    """Convert a loaded YAML document into a Policy, or return every problem found in it."""
    reader = _Reader(file)
    if not isinstance(document, dict):
        reader.problem("", f"the top level must be a mapping, not {_kind(document)}")
        return None, reader.problems
    values = reader.section(document, "", _POLICY)
    _check_tiers(reader, values.get("stages") or {})
    _check_tools_named(reader, values)
    if reader.problems:
        return None, reader.problems
    stages = values.pop("stages")
    return Policy(**values, **stages, file=file, revision=revision), []
