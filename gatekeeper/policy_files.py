"""Policy files: YAML text -> the pydantic format (gatekeeper/policy_format.py) -> the frozen policy model.

`parse_policy` loads the YAML (refusing duplicate keys and oversized files), validates the whole
document through `PolicyFormat`, and turns every pydantic error into a `PolicyProblem` with the
file, the field path (`stages.canary.tiers[1]`) and a plain message, all of them at once, so
`gatekeeper policy check` shows every problem in one run. A valid document becomes
`gatekeeper.core.policy.Policy`, the only shape the rest of Gatekeeper sees.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml
from pydantic import ValidationError

from gatekeeper.core.policy import (
    COMPARE_METRICS,
    AlertPolicy,
    ApprovalPolicy,
    BeforeRule,
    Caps,
    CompareSpec,
    ExtraQuery,
    KillSwitch,
    MaxCallsRule,
    Policy,
    SequenceRule,
    ShadowGate,
    ShadowStage,
    TierGate,
    TierStage,
    TwinGate,
    TwinStage,
)
from gatekeeper.policy_format import (
    BeforeRuleFormat,
    CapsFormat,
    CompareFormat,
    GateFormat,
    PolicyFormat,
    TierStageFormat,
    ToolFormat,
    kind,
)
from gatekeeper.policy_problems import PolicyError, PolicyProblem, problems_from
from gatekeeper.scenario_files import is_scenario_file, to_scenario, with_scenario_files

MAX_POLICY_BYTES = 1_000_000  # a policy is hand-written; anything bigger is a mistake or an attack


def policy_revision(text: str) -> str:
    """Return the policy's content hash: the first 12 hex digits of sha256 of its UTF-8 bytes."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


# -- YAML -------------------------------------------------------------------------------------


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


def _load_yaml(text: str) -> Any:
    """Load a policy's YAML text, raising ValueError with the one problem that stops the read."""
    if len(text.encode("utf-8")) > MAX_POLICY_BYTES:
        raise ValueError(f"is larger than {MAX_POLICY_BYTES} bytes")
    try:
        document = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ValueError(f"invalid YAML{where}: {exc.problem}") from None
    except yaml.YAMLError as exc:
        raise ValueError(f"invalid YAML: {exc}") from None
    if not isinstance(document, dict):
        raise ValueError(f"the top level must be a mapping, not {kind(document)}")
    return document


# -- the format -> the policy model ---------------------------------------------------------


def _caps(caps: CapsFormat) -> Caps:
    return Caps(tool_calls_per_session=caps.tool_calls_per_session, spend_per_session_micros=caps.spend_per_session)


def _compare(compare: CompareFormat | None) -> CompareSpec | None:
    if compare is None:
        return None
    margins = tuple((m, getattr(compare, m).max_increase) for m in COMPARE_METRICS if getattr(compare, m) is not None)
    return CompareSpec(margins=margins, confidence=compare.confidence)


def _gate(gate: GateFormat) -> TierGate:
    return TierGate(
        interval_s=gate.interval,
        window_s=gate.window,
        soak_s=gate.soak,
        min_sessions=gate.min_sessions,
        max_error_rate=gate.max_error_rate,
        max_p95_latency_s=gate.max_p95_latency,
        max_cost_per_session_micros=gate.max_cost_per_session,
        failure_limit=gate.failure_limit,
        on_metrics_error=gate.on_metrics_error,
        error_limit=gate.error_limit,
        queries=tuple(ExtraQuery(name=name, query=q.query, max=q.max, min=q.min) for name, q in gate.queries.items()),
        max_overrun_rate=gate.max_overrun_rate,
        compare=_compare(gate.compare),
    )


def _tier_stage(stage: TierStageFormat, top: GateFormat) -> TierStage:
    """Build a canary or expansion stage; its own gate keys are merged over the top-level gate."""
    merged = top.model_copy(update={key: getattr(stage.gate, key) for key in stage.gate.model_fields_set})
    approval_required = tuple(getattr(stage, "approval_required"))  # noqa: B009 - declared per stage
    return TierStage(
        tiers=tuple(stage.tiers), caps=_caps(stage.caps), approval_required=approval_required, gate=_gate(merged)
    )


def _rule(rule: Any) -> SequenceRule:
    if isinstance(rule, BeforeRuleFormat):
        return BeforeRule(before=rule.before, then=rule.then)
    return MaxCallsRule(limits=MappingProxyType(dict(rule.max_calls)))


def to_policy(doc: PolicyFormat, *, file: str, revision: str) -> Policy:
    """Build the frozen policy model from a validated policy document."""
    twin, shadow = doc.stages.twin, doc.stages.shadow
    scenarios = {name: to_scenario(name, s, None, file=None) for name, s in twin.scenarios.items()}
    return Policy(
        name=doc.name,
        agents=tuple(doc.agents),
        tools=MappingProxyType(
            {tool: e.tool_class if isinstance(e, ToolFormat) else e for tool, e in doc.tools.items()}
        ),
        sequence_rules=tuple(_rule(rule) for rule in doc.sequence_rules),
        twin=TwinStage(
            gate=TwinGate(
                min_runs=twin.gate.min_runs,
                min_pass_rate=twin.gate.min_pass_rate,
                max_twin_age_s=twin.gate.max_twin_age,
                min_fidelity=twin.gate.min_fidelity,
                min_replays=twin.gate.min_replays,
            ),
            scenarios=MappingProxyType(scenarios),
            chaos=MappingProxyType({key: settings.to_chaos() for key, settings in twin.chaos.items()}),
            scenario_files=tuple(twin.scenario_files),
            differences=tuple(twin.differences),
        ),
        shadow=ShadowStage(
            traffic_percent=shadow.traffic_percent,
            execute=tuple(shadow.execute),
            gate=ShadowGate(**shadow.gate.model_dump(exclude={"soak"}), soak_s=shadow.gate.soak),
        ),
        canary=_tier_stage(doc.stages.canary, doc.gate),
        expansion=_tier_stage(doc.stages.expansion, doc.gate),
        stable_caps=_caps(doc.stable_caps),
        gate=_gate(doc.gate),
        kill_switch=KillSwitch(
            window_s=doc.kill_switch.window,
            min_calls=doc.kill_switch.min_calls,
            max_error_rate=doc.kill_switch.max_error_rate,
            revert_to=doc.kill_switch.action.revert_to,
        ),
        alerts=AlertPolicy(
            default=doc.alerts.default,
            by_severity=MappingProxyType(
                {str(severity): action for severity, action in doc.alerts.by_severity.items()}
            ),
        ),
        approvals=ApprovalPolicy(expire_after_s=doc.approvals.expire_after, redact=tuple(doc.approvals.redact)),
        file=file,
        revision=revision,
        tool_costs=MappingProxyType(
            {tool: e.cost for tool, e in doc.tools.items() if isinstance(e, ToolFormat) and e.cost is not None}
        ),
    )


# -- entry points -----------------------------------------------------------------------------


def _read(text: str, file: str) -> tuple[Policy | None, list[PolicyProblem]]:
    try:
        doc = PolicyFormat.model_validate(_load_yaml(text))
    except ValidationError as exc:
        return None, problems_from(exc, file)
    except ValueError as exc:
        return None, [PolicyProblem(file, "", str(exc))]
    policy = to_policy(doc, file=file, revision=policy_revision(text))
    if not policy.twin.scenario_files or file == "<string>":
        return policy, []
    policy, problems = with_scenario_files(policy, folder=Path(file).parent)
    return (None, problems) if problems else (policy, [])


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
            found = sorted(p for p in path.iterdir()
                           if p.suffix in (".yaml", ".yml") and p.is_file() and not is_scenario_file(p))
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
