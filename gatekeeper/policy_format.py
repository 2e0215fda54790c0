"""The policy file format (SPEC §4) as pydantic models: field types, defaults, and the JSON Schema.

Every default is written here once, in YAML units (`"30s"`, `0.40`), and goes through the same
validators as a value the file gives. Durations become float seconds, dollars int micro-dollars
(`gatekeeper.core.policy.parse_duration` / `parse_money`). Rules that span fields (tiers ending at
100, sequence rules and scenarios naming tools from `tools`) are validators on the model that holds
both fields; a validator that finds several problems raises `Problems`, each with its sub-path, so
`gatekeeper policy check` still lists every one. `policy_schema()` is what `gatekeeper policy
schema` prints and what policies/policy.schema.json ships.
"""

from __future__ import annotations

import math
from typing import Annotated, Any

from pydantic import (
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationInfo,
    field_validator,
    model_validator,
)

from gatekeeper.core.policy import (
    COMPARE_METRICS,
    METRICS_ERROR_ACTIONS,
    MetricsErrorAction,
)
from gatekeeper.core.vocabulary import REVERT_STAGES, TOOL_CLASSES, RevertStage
from gatekeeper.policy_chaos import ChaosMap, MaxRetries
from gatekeeper.policy_fields import (
    AlertActionName,
    Count0,
    Count1,
    Duration,
    Money,
    Percent,
    PositiveDuration,
    Problems,
    Rate,
    Section,
    SeverityName,
    Slug,
    Text,
    Tiers,
    TiersTo100,
    ToolClasses,
    ToolClassName,
    UniqueSlugs,
    UniqueTexts,
    between,
    choice,
    kind,
    mapping_or_empty,
    raw,
)
from gatekeeper.scenario_fields import UniqueScenarioFiles

# -- sections --------------------------------------------------------------------------------


class CapsFormat(Section):
    tool_calls_per_session: Count1 = Field(description="tool calls a session may make")
    spend_per_session: Money = Field(description="dollars a session may spend")


class QueryFormat(Section):
    query: Text = Field(description="PromQL; {agent} {version} {window} are filled in")
    max: float | None = Field(None, description="the query's value must not exceed this")
    min: float | None = Field(None, description="the query's value must not fall below this")

    @field_validator("max", "min", mode="before")
    @classmethod
    def _finite(cls, value: object) -> object:
        return None if value is None else between(-math.inf, math.inf)(value)

    @model_validator(mode="after")
    def _bounded(self) -> QueryFormat:
        if self.min is None and self.max is None:
            raise ValueError("needs max, min or both")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise Problems([("min", f"must not be above max ({self.max:g})")])
        return self


class MarginFormat(Section):
    max_increase: Annotated[float, Field(ge=0, le=100), BeforeValidator(between(0, 100))] = Field(
        description="relative margin: 0.5 = at most 50% worse than stable"
    )


class CompareFormat(Section):
    """`gate.compare`: the candidate against stable since the tier began (SPEC §10)."""

    @model_validator(mode="before")
    @classmethod
    def _named_means_compared(cls, value: object) -> object:
        """`error_rate:` with nothing under it still needs its max_increase; only a missing key compares nothing."""
        if isinstance(value, dict):
            return {key: {} if key in COMPARE_METRICS and entry is None else entry for key, entry in value.items()}
        return value

    error_rate: MarginFormat | None = Field(None, description="per-call error rate")
    session_error_rate: MarginFormat | None = Field(None, description="share of sessions with an error")
    p95_latency: MarginFormat | None = Field(None, description="p95 tool-call latency")
    cost_per_session: MarginFormat | None = Field(None, description="dollars per session")
    confidence: Annotated[float, Field(ge=0.5, le=0.9999), BeforeValidator(between(0.5, 0.9999))] = Field(
        raw(0.95), description="spent over every comparison of every canary and expansion tier"
    )

    @model_validator(mode="after")
    def _compares_something(self) -> CompareFormat:
        if all(getattr(self, metric) is None for metric in COMPARE_METRICS):
            raise ValueError(f"compares nothing: name at least one of {', '.join(COMPARE_METRICS)}")
        return self


class GateFormat(Section):
    """The tier gate of canary and expansion, judged every `interval` over the last `window`."""

    interval: PositiveDuration = Field(raw("30s"), description="how often the scheduler evaluates the tier gate")
    window: PositiveDuration = Field(raw("10m"), description="metrics window (PromQL range)")
    soak: Duration = Field(raw("30m"), description="minimum time at a tier before promotion")
    min_sessions: Count1 = Field(raw(100), description="candidate sessions in the window needed to judge")
    max_error_rate: Rate = Field(raw(0.02), description="candidate tool-call error rate")
    max_p95_latency: PositiveDuration = Field(raw("2s"), description="candidate p95 tool-call latency")
    max_cost_per_session: Money = Field(raw(0.40), description="candidate dollars per session")
    max_overrun_rate: Rate = Field(
        raw(0.05), description="share of candidate outcomes whose actual cost exceeded the decision's reservation"
    )
    failure_limit: Count1 = Field(raw(2), description="consecutive failed evaluations before rollback")
    on_metrics_error: Annotated[MetricsErrorAction, BeforeValidator(choice(METRICS_ERROR_ACTIONS, "value"))] = Field(
        raw("hold"), description="hold or rollback once error_limit is reached"
    )
    error_limit: Count1 = Field(raw(4), description="consecutive metrics errors before on_metrics_error acts")
    queries: Annotated[dict[Text, QueryFormat], BeforeValidator(mapping_or_empty)] = Field(
        raw({}),
        description="name -> {query, max and/or min}; {agent} {version} {window} are filled in (Prometheus only)",
    )
    compare: CompareFormat | None = Field(None, description="candidate vs stable since the tier began")


def _without_defaults(schema: dict[str, Any]) -> None:
    for prop in schema.get("properties", {}).values():
        prop.pop("default", None)


class StageGateFormat(GateFormat):
    """A stage's own gate keys, merged over the top-level `gate`: what it leaves out comes from there."""

    model_config = ConfigDict(json_schema_extra=_without_defaults)


class ScenarioFormat(Section):
    expect: list[Text] = Field(raw([]), description="tools in this order; others may interleave")
    forbid: UniqueTexts = Field(raw([]), description="tools the scenario must never call")
    max_retries: MaxRetries = Field(
        raw({}), description="tool -> retries allowed after a failed call of it (graceful handling of failures)"
    )
    no_blind_retry: bool = Field(
        True, description="an irreversible tool must not be called again straight after it failed or timed out"
    )
    ends_cleanly: bool = Field(True, description="the agent ends the run itself (ok or error, not abandoned)")
    arguments: list[dict[Text, str | int | float | bool]] = Field(
        raw([]), description="per expect step, the argument values its call must carry ([] or one per step)")

    @model_validator(mode="after")
    def _asserts(self) -> ScenarioFormat:
        both = sorted(set(self.expect) & set(self.forbid))
        if self.arguments and len(self.arguments) != len(self.expect):
            raise Problems([("arguments", f"needs one mapping per expect step ({len(self.expect)})")])
        if both:
            raise Problems([("forbid", f"'{tool}' is both expected and forbidden") for tool in both])
        if not self.expect and not self.forbid and not self.max_retries:
            raise ValueError("asserts nothing: give expect, forbid, max_retries or several")
        return self


class TwinGateFormat(Section):
    min_runs: Count1 = Field(raw(50), description="twin scenario runs needed to leave twin")
    min_pass_rate: Rate = Field(raw(0.98), description="share of twin runs whose assertions passed")
    max_twin_age: PositiveDuration = Field(raw("24h"), description="oldest acceptable twin snapshot")
    min_fidelity: Rate | None = Field(None, description="share of the stable version's replays that are faithful")
    min_replays: Count1 = Field(raw(5), description="stable replays needed before min_fidelity is judged")


class TwinFormat(Section):
    gate: TwinGateFormat = Field(raw({}), description="the twin gate")
    scenarios: Annotated[dict[Text, ScenarioFormat], BeforeValidator(mapping_or_empty)] = Field(
        raw({}), description="name -> {expect, forbid}: golden paths with trajectory assertions"
    )
    chaos: ChaosMap = Field(
        raw({}), description="tool or tool class -> failures rehearsed in twin sessions, deterministic per session "
                             "seed and call (a tool's own entry wins over its class's)"
    )
    scenario_files: UniqueScenarioFiles = Field(raw([]), description="machine-made scenario files beside the policy")
    differences: UniqueTexts = Field(raw([]), description="known differences between the twin and production")


class ShadowGateFormat(Section):
    min_sessions: Count1 = Field(raw(200), description="mirrored sessions needed to leave shadow")
    soak: Duration = Field(raw("1h"), description="minimum time in shadow")
    max_error_rate: Rate = Field(raw(0.05), description="candidate error rate in shadow")
    max_violation_rate: Rate = Field(
        raw(0.01), description="share of shadowed calls that caps or sequence rules would have refused"
    )
    min_agreement: Rate = Field(
        raw(0.9), description="share of mirrored pairs whose side-effecting calls match stable's"
    )


class ShadowFormat(Section):
    traffic_percent: Percent = Field(raw(100), description="share of live sessions mirrored to the candidate")
    execute: ToolClasses = Field(raw(["read_only"]), description="tool classes the shadow candidate really executes")
    gate: ShadowGateFormat = Field(raw({}), description="the shadow gate")


class TierStageFormat(Section):
    tiers: Tiers = Field(description="traffic percentages, ascending")
    caps: CapsFormat = Field(description="per-session caps in this stage")
    approval_required: ToolClasses = Field(raw([]), description="tool classes that need a person in expansion")
    gate: StageGateFormat = Field(raw({}), description="keys merged over the top-level gate")


class CanaryFormat(TierStageFormat):
    approval_required: ToolClasses = Field(
        raw(["irreversible"]), description="tool classes that need a person in canary (and in twin, for parity)"
    )


class ExpansionFormat(TierStageFormat):
    tiers: TiersTo100 = Field(description="traffic percentages, ascending, the last one 100")


class StagesFormat(Section):
    twin: TwinFormat = Field(raw({}), description="the digital twin: scenario runs against a rehearsal environment")
    shadow: ShadowFormat = Field(raw({}), description="live traffic mirrored to the candidate")
    canary: CanaryFormat
    expansion: ExpansionFormat

    @model_validator(mode="after")
    def _canary_below_expansion(self) -> StagesFormat:
        first = self.expansion.tiers[0]
        found = [
            (f"canary.tiers[{i}]", f"must be below the first expansion tier ({first:g})")
            for i, tier in enumerate(self.canary.tiers)
            if tier >= first
        ]
        if found:
            raise Problems(found)
        return self


class ToolFormat(Section):
    tool_class: ToolClassName = Field(alias="class", description="read_only, reversible or irreversible")
    cost: Money | None = Field(None, description="estimated dollars per call (the gateway reserves it)")


class BeforeRuleFormat(Section):
    before: Text = Field(description="this tool must have run in the session ...")
    then: Text = Field(description="... before this one is allowed")

    @model_validator(mode="before")
    @classmethod
    def _a_rule(cls, value: object) -> object:
        if not isinstance(value, dict):
            raise ValueError(f"must be a mapping {{before, then}} or {{max_calls}}, not {kind(value)}")
        return value

    @model_validator(mode="after")
    def _two_tools(self) -> BeforeRuleFormat:
        if self.before == self.then:
            raise Problems([("then", "must name a different tool than before")])
        return self


class MaxCallsFormat(Section):
    max_calls: Annotated[dict[Text, Count0], BeforeValidator(mapping_or_empty)] = Field(
        description="tool -> calls allowed per session"
    )


# Union members are told apart by shape; the tag names appear in pydantic's error locations only.
TAGS = frozenset({"<class>", "<class and cost>", "<before>", "<max_calls>"})
ToolEntry = Annotated[
    Annotated[ToolClassName, Tag("<class>")] | Annotated[ToolFormat, Tag("<class and cost>")],
    Discriminator(lambda value: "<class and cost>" if isinstance(value, dict) else "<class>"),
]
SequenceRuleFormat = Annotated[
    Annotated[BeforeRuleFormat, Tag("<before>")] | Annotated[MaxCallsFormat, Tag("<max_calls>")],
    Discriminator(lambda value: "<max_calls>" if isinstance(value, dict) and "max_calls" in value else "<before>"),
]


class KillSwitchActionFormat(Section):
    revert_to: Annotated[RevertStage, BeforeValidator(choice(REVERT_STAGES, "stage"))] = Field(
        raw("shadow"), description="stage to revert to; the rollout's state becomes killed"
    )


class KillSwitchFormat(Section):
    window: PositiveDuration = Field(raw("60s"), description="error-rate window")
    min_calls: Count1 = Field(raw(20), description="candidate outcomes in the window before it may trip")
    max_error_rate: Rate = Field(raw(0.25), description="error rate that trips it")
    action: KillSwitchActionFormat = Field(raw({}), description="what tripping does")


class AlertsFormat(Section):
    default: AlertActionName = Field(
        raw("rollback"), description="action on a firing alert: rollback (one tier), hold or kill"
    )
    by_severity: Annotated[dict[SeverityName, AlertActionName], BeforeValidator(mapping_or_empty)] = Field(
        raw({}), description="severity -> action (severities matched case-insensitively)"
    )


class ApprovalsFormat(Section):
    expire_after: PositiveDuration = Field(raw("15m"), description="a pending approval expires after this")
    redact: UniqueTexts = Field(
        raw([]), description="argument field names masked (at any depth, any case) for approvers and in traces"
    )


class PolicyFormat(Section):
    """A Gatekeeper policy file (SPEC §4): which agents it binds, their tools, and how a rollout advances."""

    model_config = ConfigDict(title="Gatekeeper policy")

    name: Slug = Field(description="the policy's name")
    agents: UniqueSlugs = Field(description="agents bound to this policy ([]: any agent may bind to it)")
    tools: Annotated[dict[Text, ToolEntry], BeforeValidator(mapping_or_empty)] = Field(
        raw({}), description="tool -> class, or {class, cost}; unnamed tools are irreversible"
    )
    sequence_rules: list[SequenceRuleFormat] = Field(
        raw([]), description="{before: a, then: b} denies b until a ran; {max_calls: {tool: n}} per session"
    )
    gate: GateFormat = Field(raw({}), description="the default tier gate for canary and expansion")
    stages: StagesFormat
    stable_caps: CapsFormat = Field(description="per-session caps of the stable version")
    kill_switch: KillSwitchFormat = Field(raw({}), description="the in-path kill switch")
    alerts: AlertsFormat = Field(raw({}), description="Alertmanager alerts labelled agent=<name>")
    approvals: ApprovalsFormat = Field(raw({}), description="approvals by a person")

    @field_validator("sequence_rules")
    @classmethod
    def _rules_name_tools(cls, rules: list[Any], info: ValidationInfo) -> list[Any]:
        named = []
        for i, rule in enumerate(rules):
            if isinstance(rule, BeforeRuleFormat):
                named += [(f"[{i}].before", rule.before), (f"[{i}].then", rule.then)]
            else:
                named += [(f"[{i}].max_calls.{tool}", tool) for tool in rule.max_calls]
        _named_in_tools(named, info)
        return rules

    @field_validator("stages")
    @classmethod
    def _scenarios_name_tools(cls, stages: StagesFormat, info: ValidationInfo) -> StagesFormat:
        named = [
            (f"twin.scenarios.{name}.{key}[{i}]", tool)
            for name, scenario in stages.twin.scenarios.items()
            for key in ("expect", "forbid")
            for i, tool in enumerate(getattr(scenario, key))
        ]
        named += [(f"twin.scenarios.{name}.max_retries.{tool}", tool)
                  for name, scenario in stages.twin.scenarios.items() for tool in scenario.max_retries]
        named += [(f"twin.chaos.{key}", key) for key in stages.twin.chaos if key not in TOOL_CLASSES]
        _named_in_tools(named, info)
        return stages


def _named_in_tools(named: list[tuple[str, str]], info: ValidationInfo) -> None:
    """Refuse tools missing from `tools`: a typo in a rule or scenario would silently never match."""
    if "tools" not in info.data:  # `tools` has its own problems, reported already
        return
    missing = [
        (path, f"tool '{tool}' is not in tools; name it there with its class")
        for path, tool in named
        if tool not in info.data["tools"]
    ]
    if missing:
        raise Problems(missing)


def policy_schema() -> dict[str, Any]:
    """Return the JSON Schema of a policy file, as `gatekeeper policy schema` prints it."""
    schema = PolicyFormat.model_json_schema(by_alias=True)
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}
