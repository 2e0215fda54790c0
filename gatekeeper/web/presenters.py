"""What the pages show of an agent: the ladder, the gate checklist, metrics health, soak and actions.

Everything here tolerates a missing policy, rollout or gate report, and a report with
missing fields: a page must say "no data" or "metrics unavailable", never fail.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from sqlmodel import Session

from gatekeeper.api.schemas import AgentStatus, RolloutView
from gatekeeper.api.views import ReportState, describe_agent, gate_report, tier_name
from gatekeeper.core import ladder
from gatekeeper.core.ladder import RolloutStatus, Tier
from gatekeeper.core.policy import Policy
from gatekeeper.core.vocabulary import STAGES
from gatekeeper.errors import GatekeeperError, NotFound
from gatekeeper.policy_store import LoadedPolicy, PolicyStore
from gatekeeper.store import reads, rollout_records
from gatekeeper.store.models import Agent, Approval
from gatekeeper.web.filters import figure

ACTIONS = (("promote", "Promote"), ("promote_full", "Promote to 100%"), ("pause", "Pause"),
           ("resume", "Resume"), ("rollback", "Roll back"), ("kill", "Kill"), ("abort", "Abort"))
DANGEROUS = frozenset({"rollback", "kill", "abort"})


@dataclass(frozen=True)
class TierStep:
    label: str  # short: `5%` after the stage's first tier
    status: str  # done | current | todo
    full: str = ""  # `canary 5%`, as every other view names it


@dataclass(frozen=True)
class CompareRow:
    """A comparison with stable as the checklist shows it: both arms, the estimate and its interval."""

    candidate: str
    stable: str
    estimate: str
    interval: str
    margin: str
    sizes: str


@dataclass(frozen=True)
class Check:
    """One gate check as a checklist line: value against threshold, and its result."""

    name: str
    value: str
    threshold: str
    comparison: str
    result: str  # pass | fail | no_data | error | inconclusive
    detail: str
    compare: CompareRow | None = None
    shown: str = ""  # what the page says: the result, or `collecting` / `not yet counted` while evidence is thin

    @property
    def display(self) -> str:
        return self.shown or self.result


@dataclass(frozen=True)
class MetricsHealth:
    source: str
    available: bool
    since: float | None
    error: str | None


@dataclass(frozen=True)
class ActionOption:
    """A button of the agent page: whether it is enabled, and where it would move the rollout."""

    name: str
    label: str
    enabled: bool
    why_disabled: str
    target: str
    stages: tuple[tuple[str, str], ...] = ()  # rollback: (stage, where it lands)

    @property
    def dangerous(self) -> bool:
        return self.name in DANGEROUS


@dataclass(frozen=True)
class Superseded:
    """A gate report that no longer describes the rollout: where it was about, and the step since."""

    report_label: str
    evaluated_at: float | None
    action: str
    at: float | None
    actor: str
    to_label: str


@dataclass(frozen=True)
class AgentView:
    """An agent as the overview row and the agent page show it."""

    status: AgentStatus
    policy: Policy | None
    active: bool
    tier_steps: tuple[TierStep, ...]
    checks: tuple[Check, ...]
    report: dict[str, Any]
    metrics: MetricsHealth | None
    time_at_tier_s: float | None
    soak_required_s: float | None
    superseded: Superseded | None = None
    approvals: tuple[Approval, ...] = ()
    decided: tuple[Approval, ...] = ()  # the newest approvals no longer pending

    @property
    def collecting(self) -> bool:
        """Return whether the gate only waits for evidence (too few sessions or runs, soaking): not a failure."""
        return collecting_evidence(self.report)

    @property
    def soak_left_s(self) -> float | None:
        if self.soak_required_s is None or self.time_at_tier_s is None:
            return None
        return max(0.0, self.soak_required_s - self.time_at_tier_s)


def agent_view(db: Session, agent: Agent, *, policies: PolicyStore, now: float,
               with_approvals: bool = False) -> AgentView:
    """Describe one agent for the pages."""
    status = describe_agent(db, policies, agent, now=now)
    policy = loaded_or_none(policies, agent.policy)
    rollout = status.rollout
    active = agent.rollout_id is not None and rollout is not None and rollout.id == agent.rollout_id
    report = status.gate_report if isinstance(status.gate_report, dict) else {}
    at_tier = now - rollout.tier_started_at.timestamp() if active and rollout else None
    row = rollout_records.current_rollout(agent, db=db) if active else None
    stale = superseded(gate_report(db, row), policy.policy if policy else None) if row else None
    return AgentView(
        status=status, policy=policy.policy if policy else None, active=active,
        tier_steps=tier_steps(policy.policy, rollout) if policy else (), checks=checks(report), report=report,
        metrics=metrics_health(report), time_at_tier_s=at_tier,
        soak_required_s=soak_required(policy.policy, rollout, report) if policy and active and rollout else None,
        superseded=stale,
        # Detached copies: the read's rollback would expire the rows before the template renders.
        approvals=tuple(Approval(**a.model_dump()) for a in reads.pending_approvals_of(agent.id or 0, now=now, db=db))
        if with_approvals else (),
        decided=tuple(Approval(**a.model_dump()) for a in reads.decided_approvals_of(agent.id or 0, db=db))
        if with_approvals else ())


def superseded(state: ReportState, policy: Policy | None) -> Superseded | None:
    """Return what superseded the newest gate report, or None when it is current (or there is none)."""
    if not state.stale or state.newest is None:
        return None
    report, step = state.newest, state.superseded_by
    stage, tier = report.get("stage"), report.get("tier")
    label = str(report.get("tier_label") or tier_name(policy, str(stage) if stage else None,
                                                      tier=tier if isinstance(tier, int) else 0))
    at = report.get("evaluated_at")
    if step is None:
        return Superseded(label, at if isinstance(at, int | float) else None, "move", None, "", "")
    return Superseded(label, at if isinstance(at, int | float) else None, step.action, step.at, step.actor,
                      tier_name(policy, step.to_stage, tier=step.to_tier))


EVIDENCE_CHECKS = frozenset({"sessions", "runs"})
COLLECTING_REASONS = ("too few ", "soaking:")


def collecting_evidence(report: dict[str, Any]) -> bool:
    """Return whether a held report only waits for more sessions, runs or soak time."""
    reasons = report.get("reasons")
    if report.get("result") != "hold" or not isinstance(reasons, list) or not reasons:
        return False
    return all(isinstance(r, str) and (r.startswith(COLLECTING_REASONS) or r.endswith("too little evidence)"))
               for r in reasons)


def loaded_or_none(policies: PolicyStore, name: str) -> LoadedPolicy | None:
    """Return the loaded policy called `name`, or None when it is gone."""
    try:
        return policies.get(name)
    except NotFound:
        return None


def tier_steps(policy: Policy, rollout: RolloutView | None) -> tuple[TierStep, ...]:
    """Return the ladder with the rollout's tier marked (all done once completed)."""
    tiers = ladder.ladder(policy)
    here = Tier(rollout.stage, rollout.tier) if rollout else None
    current = tiers.index(here) if here in tiers else -1
    if rollout is not None and rollout.state == "completed":
        current = len(tiers)
    if rollout is not None and rollout.state == "aborted":
        current = -1
    return tuple(TierStep(_tier_step_label(policy, t), "done" if i < current else "current" if i == current else "todo",
                      ladder.tier_label(policy, t))
                 for i, t in enumerate(tiers))


def _tier_step_label(policy: Policy, tier: Tier) -> str:
    if tier.index == 0:
        return ladder.tier_label(policy, tier)
    return f"{ladder.traffic_percent(policy, tier):g}%"


def checks(report: dict[str, Any]) -> tuple[Check, ...]:
    """Return the gate report's checks as checklist lines; thin evidence reads as progress, not failure."""
    found = report.get("checks")
    if not isinstance(found, list):
        return ()
    lines = tuple(_check(c) for c in found if isinstance(c, dict))
    thin = any(c.name in EVIDENCE_CHECKS and c.result == "fail" for c in lines)
    return tuple(_thin(c) if thin and c.result == "fail" else c for c in lines)


def _thin(check: Check) -> Check:
    shown = "collecting" if check.name in EVIDENCE_CHECKS else "not_counted"
    return replace(check, shown=shown)


def _check(raw: dict[str, Any]) -> Check:
    name = str(raw.get("name", "check"))
    compare = compare_row(raw["compare"]) if isinstance(raw.get("compare"), dict) else None
    if compare is not None:  # a relative increase over stable, not a figure in the metric's own unit
        return Check(name=name, value=compare.estimate, threshold=compare.margin, comparison="≤",
                     result=str(raw.get("result") or "no_data"), detail=str(raw.get("detail") or ""), compare=compare)
    return Check(name=name, value=figure(raw.get("value"), name),
                 threshold=figure(raw.get("threshold"), name) if raw.get("threshold") is not None else "",
                 comparison=str(raw.get("comparison") or ""), result=str(raw.get("result") or "no_data"),
                 detail=str(raw.get("detail") or ""), compare=compare)


def compare_row(raw: dict[str, Any]) -> CompareRow:
    """Format a gate report's comparison: candidate vs stable, relative increase, interval and sizes."""
    metric = str(raw.get("metric") or "")

    def relative(value: Any) -> str:
        return f"{value * 100:+.0f}%" if isinstance(value, int | float) else "?"

    unit = str(raw.get("unit") or "")
    sizes = f"{_count(raw.get('candidate_n'))} vs {_count(raw.get('stable_n'))} {unit}".strip()
    upper = relative(raw.get("upper")) if raw.get("upper") is not None else "+∞"  # unbounded: stable near zero
    return CompareRow(candidate=figure(raw.get("candidate"), metric), stable=figure(raw.get("stable"), metric),
                      estimate=relative(raw.get("estimate")), interval=f"[{relative(raw.get('lower'))}, {upper}]",
                      margin=relative(raw.get("margin")), sizes=sizes)


def _count(value: Any) -> str:
    return f"{value:,.0f}" if isinstance(value, int | float) else "?"


def metrics_health(report: dict[str, Any]) -> MetricsHealth | None:
    """Return the metrics source's health from the newest gate report, if there is one."""
    source = report.get("metrics_source")
    if not isinstance(source, dict):
        return None
    since = source.get("unavailable_since")
    return MetricsHealth(source=str(source.get("name") or "metrics"), available=source.get("available") is not False,
                         since=float(since) if isinstance(since, int | float) else None,
                         error=str(source["error"]) if source.get("error") else None)


def soak_required(policy: Policy, rollout: RolloutView, report: dict[str, Any]) -> float | None:
    """Return the soak the rollout's tier needs: the report's figure if it is about this tier, else the policy's."""
    soak = report.get("soak")
    same_tier = report.get("stage") == rollout.stage and report.get("tier") == rollout.tier
    if same_tier and isinstance(soak, dict) and isinstance(soak.get("required_s"), int | float):
        return float(soak["required_s"])
    if rollout.stage == "shadow":
        return policy.shadow.gate.soak_s
    if rollout.stage in ("canary", "expansion"):
        return policy.canary.gate.soak_s if rollout.stage == "canary" else policy.expansion.gate.soak_s
    return None


def actions(view: AgentView, *, can_act: bool, now: float) -> tuple[ActionOption, ...]:
    """Return every action button with whether it is enabled and where it would land."""
    rollout = view.status.rollout
    if not view.active or rollout is None or view.policy is None:
        return tuple(ActionOption(n, label, False, "no rollout in progress", "") for n, label in ACTIONS)
    status = RolloutStatus(rollout.stage, rollout.tier, rollout.state, rollout.state_reason,
                           rollout.tier_started_at.timestamp())
    allowed = set(view.status.allowed_actions)
    return tuple(_option(view.policy, status, name=name, label=label, allowed=name in allowed, can_act=can_act,
                         now=now) for name, label in ACTIONS)


def _option(policy: Policy, status: RolloutStatus, *, name: str, label: str, allowed: bool, can_act: bool,
            now: float) -> ActionOption:
    why = "" if allowed else f"not possible while the rollout is {status.state}"
    if allowed and not can_act:
        why = "viewers can see everything but act on nothing"
    stages = _rollback_stages(policy, status, now=now) if name == "rollback" and allowed else ()
    return ActionOption(name, label, allowed and can_act, why,
                        _target(policy, status, action=name, now=now) if allowed else "", stages)


def _target(policy: Policy, status: RolloutStatus, *, action: str, now: float, to_stage: str | None = None
            ) -> str:
    try:
        after = ladder.apply(status, action, policy, now=now, to_stage=to_stage,
                              revert_to=policy.kill_switch.revert_to)
    except GatekeeperError:
        return ""
    return f"{tier_name(policy, after.stage, tier=after.tier)}, {after.state}"


def _rollback_stages(policy: Policy, status: RolloutStatus, *, now: float) -> tuple[tuple[str, str], ...]:
    options = ((stage, _target(policy, status, action="rollback", now=now, to_stage=stage))
               for stage in STAGES)
    return tuple((stage, target) for stage, target in options if target)

