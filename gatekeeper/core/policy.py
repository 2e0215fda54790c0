"""The policy model (SPEC §4): typed, immutable, and the only policy shape the rest of Gatekeeper sees.

A policy binds agents to a tool map, sequence rules, the four stages' tiers, caps and gates,
the kill switch, alert handling and approvals. Units: durations are float seconds, money is
int micro-dollars, percentages are floats in (0, 100], rates are floats in [0, 1].

The file format, its defaults and its JSON Schema are the pydantic models in
`gatekeeper/policy_format.py`; `gatekeeper/policy_files.py` reads YAML through them and builds
this model. The core only converts units and never reads a file.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from types import MappingProxyType
from typing import Any, Literal, NamedTuple, cast, get_args

from gatekeeper.core.chaos import ToolChaos
from gatekeeper.core.vocabulary import ToolClass

# Each set of names is written once, as a Literal; the tuples are read from it for messages and loops.
# Stages, states, verdicts and tool classes live in core/vocabulary.py; these sets are the policy's own.
AlertAction = Literal["rollback", "hold", "kill"]
MetricsErrorAction = Literal["hold", "rollback"]
CompareMetric = Literal["error_rate", "session_error_rate", "p95_latency", "cost_per_session"]
Severity = Literal["critical", "high", "error", "warning", "medium", "low", "info", "page"]
ALERT_ACTIONS: tuple[str, ...] = get_args(AlertAction)
METRICS_ERROR_ACTIONS: tuple[str, ...] = get_args(MetricsErrorAction)
COMPARE_METRICS: tuple[str, ...] = get_args(CompareMetric)
SEVERITIES: tuple[str, ...] = get_args(Severity)
MICROS_PER_DOLLAR = 1_000_000


def _hash_fields(self: Any) -> int:
    """Hash a frozen dataclass whose mapping fields are read-only views, as equal mappings compare."""
    return hash(tuple(frozenset(v.items()) if isinstance(v, Mapping) else v for v in vars(self).values()))


class Caps(NamedTuple):
    """A session's caps (a tuple: built per decision from the session's row)."""

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
    on_metrics_error: MetricsErrorAction
    error_limit: int
    queries: tuple[ExtraQuery, ...]
    max_overrun_rate: float = 0.05  # share of outcomes whose actual cost exceeded the reservation
    compare: CompareSpec | None = None


@dataclass(frozen=True)
class Recording:
    """The session a machine-made scenario was recorded from."""

    session: str
    version: str
    arm: str
    environment: str
    at: float
    incident: str | None = None

    @property
    def replayable(self) -> bool:
        """Whether the stable version's twin runs of it measure fidelity: recorded live, from stable."""
        return self.arm == "stable" and self.environment == "live"


@dataclass(frozen=True)
class Scenario:
    name: str
    expect: tuple[str, ...]
    forbid: tuple[str, ...]
    # Graceful handling of failures (core/trajectory.py `handling_problems`): retries allowed per tool after a
    # failed call, no irreversible call straight after the same tool failed, the agent ends the run itself.
    max_retries: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))
    no_blind_retry: bool = True
    ends_cleanly: bool = True
    arguments: tuple[Mapping[str, Any], ...] = ()  # per expect step, or empty
    recorded: Recording | None = None
    file: str | None = None  # the scenario file it came from; None: the policy itself

    def __hash__(self) -> int:
        return hash((self.name, self.expect, self.forbid, frozenset(self.max_retries.items()), self.no_blind_retry,
                     self.ends_cleanly, self.recorded, self.file))


@dataclass(frozen=True)
class TwinGate:
    min_runs: int
    min_pass_rate: float
    max_twin_age_s: float
    min_fidelity: float | None = None
    min_replays: int = 5


@dataclass(frozen=True)
class TwinStage:
    gate: TwinGate
    scenarios: Mapping[str, Scenario]
    chaos: Mapping[str, ToolChaos] = field(default_factory=lambda: MappingProxyType({}))  # tool or class -> chaos
    scenario_files: tuple[str, ...] = ()
    differences: tuple[str, ...] = ()

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
    tool_costs: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))  # micro-dollars, per call

    __hash__ = _hash_fields

    def tool_class(self, tool: str) -> ToolClass:
        """Return the tool's class; a tool the policy does not name is irreversible."""
        return self.tools.get(tool, "irreversible")

    def tool_cost(self, tool: str) -> int | None:
        """Return the policy's estimated cost of one call of the tool in micro-dollars, if it gives one."""
        return self.tool_costs.get(tool)

    def tiers(self, stage: str) -> tuple[float, ...]:
        """Return the traffic percentages of a stage's tiers."""
        if stage == "twin":
            return (0.0,)
        if stage == "shadow":
            return (self.shadow.traffic_percent,)
        if stage in ("canary", "expansion"):
            return cast(TierStage, getattr(self, stage)).tiers
        raise ValueError(f"unknown stage {stage!r}")


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
