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
| gate.max_overrun_rate | 0.05 | share of candidate outcomes whose actual cost exceeded the reservation |
| gate.failure_limit | 2 | consecutive failed evaluations before rollback |
| gate.on_metrics_error | hold | hold or rollback once error_limit is reached |
| gate.error_limit | 4 | consecutive metrics errors before on_metrics_error acts |
| gate.queries | {} | name -> {query, max and/or min}; `{agent}` `{version}` `{window}` are filled in |
| gate.compare | none | candidate vs stable since the tier began: metric -> {max_increase}, and confidence |
| gate.compare.<metric>.max_increase | | error_rate, session_error_rate, p95_latency, cost_per_session |
| gate.compare.confidence | 0.95 | spent over every comparison of every canary and expansion tier |
| kill_switch.window | 60s | error-rate window |
| kill_switch.min_calls | 20 | calls in the window before the kill switch may trip |
| kill_switch.max_error_rate | 0.25 | error rate that trips it |
| kill_switch.action.revert_to | shadow | stage to revert to (twin, shadow or canary); state becomes killed |
| alerts.default | rollback | action for a firing alert: rollback (one tier), hold or kill |
| alerts.by_severity | {} | severity -> action; severities: critical, high, error, warning, medium, low, |
| | | info, page (matched case-insensitively) |
| approvals.expire_after | 15m | a pending approval expires after this |
| approvals.redact | [] | argument field names masked for approvers and in traces, at any depth |
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
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
class CompareSpec:
    """`gate.compare`: candidate vs stable, each metric with its relative margin (SPEC §10)."""

    margins: tuple[tuple[str, float], ...]  # (metric, max_increase), in the order written
    confidence: float


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
    max_overrun_rate: float = 0.05  # share of outcomes whose actual cost exceeded the reservation
    compare: CompareSpec | None = None


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
    redact: tuple[str, ...] = ()  # argument field names masked for approvers and in traces, at any depth


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


# -- entry points ------------------------------------------------------------------------
# The schema (policy_schema) imports the model above, so it is imported inside _read, not at the top.


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


def _load_yaml(text: str, file: str) -> tuple[Any, list[PolicyProblem]]:
    """Load a policy's YAML text, returning the document or the one problem that stops the read."""

    def failed(message: str) -> tuple[None, list[PolicyProblem]]:
        return None, [PolicyProblem(file, "", message)]

    if len(text.encode("utf-8")) > MAX_POLICY_BYTES:
        return failed(f"is larger than {MAX_POLICY_BYTES} bytes")
    try:
        return yaml.load(text, Loader=_StrictLoader), []  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        return failed(f"invalid YAML{where}: {exc.problem}")
    except yaml.YAMLError as exc:
        return failed(f"invalid YAML: {exc}")


def _read(text: str, file: str) -> tuple[Policy | None, list[PolicyProblem]]:
    from gatekeeper.core.policy_schema import read_document

    document, problems = _load_yaml(text, file)
    if problems:
        return None, problems
    return read_document(document, file, revision=policy_revision(text))


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
