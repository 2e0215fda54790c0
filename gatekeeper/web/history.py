"""The story of a rollout on the agent page: its history timeline and the charts of its gate values."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any

from sqlmodel import Session

from gatekeeper.api.schemas import HistoryEntry, RolloutView
from gatekeeper.api.views import history_entries
from gatekeeper.core.policy import Policy, TierGate
from gatekeeper.policy_store import PolicyStore
from gatekeeper.store import rollouts as store
from gatekeeper.store.models import Agent
from gatekeeper.web import charts, queries
from gatekeeper.web.filters import figure, label, utc

PER_PAGE = 25
CEILINGS = {"error_rate": 1.0, "traffic_percent": 100.0}  # shares: the axis never runs past 100%
PEOPLE = ("user:", "release_manager:")
SERIES = (("error_rate", "Error rate"), ("p95_latency_s", "p95 latency"),
          ("cost_per_session", "Cost per session"), ("traffic_percent", "Traffic share"))


@dataclass(frozen=True)
class TimelineEntry:
    """One line of the history: a transition or a gate evaluation, with the numbers behind it."""

    kind: str
    at: float
    actor: str
    action: str
    reason: str
    from_label: str
    to_label: str
    state: str
    policy_revision: str
    numbers: tuple[tuple[str, str], ...]
    version: str = ""  # the rollout's candidate version

    @property
    def automatic(self) -> bool:
        return not self.actor.startswith(PEOPLE)


@dataclass(frozen=True)
class Timeline:
    entries: tuple[TimelineEntry, ...]
    total: int
    page: int
    pages: int


def timeline(session: Session, agent: Agent, *, policies: PolicyStore, page: int, include_gates: bool
             ) -> Timeline:
    """Return one page of an agent's history, newest first (transitions only unless asked)."""
    kinds = ("transition", "gate_evaluation") if include_gates else ("transition",)
    page = max(1, page)
    rows, total = store.history(session, agent.id or 0, limit=PER_PAGE, offset=(page - 1) * PER_PAGE, kinds=kinds)
    entries = tuple(_entry(item) for item in history_entries(session, policies, agent, rows))
    return Timeline(entries, total, page, max(1, -(-total // PER_PAGE)))


def _entry(item: HistoryEntry) -> TimelineEntry:
    before, after = item.from_, item.to
    return TimelineEntry(
        kind=item.kind, at=item.at.timestamp(), actor=item.actor, action=item.action, reason=item.reason,
        from_label=before.label or "" if before else "", to_label=after.label or "", state=after.state or "",
        policy_revision=item.policy_revision, numbers=numbers(item.metrics), version=item.candidate_version or "")


def numbers(metrics: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    """Return the figures stored with a step: its values, then every check that did not pass."""
    nested = metrics.get("values")
    values: dict[str, Any] = nested if isinstance(nested, dict) else metrics
    shown = [(label(key), figure(value, key)) for key, value in values.items()
             if value is None or (isinstance(value, int | float) and not isinstance(value, bool))]
    for check in metrics.get("checks") or []:
        if isinstance(check, dict) and check.get("result") != "pass":
            name = str(check.get("name", "check"))
            shown.append((label(name), f"{figure(check.get('value'), name)} "
                          f"({check.get('result')}; limit {check.get('comparison', '')} "
                          f"{figure(check.get('threshold'), name)})"))
    return tuple(shown)


def rollout_charts(session: Session, rollout: RolloutView, *, policy: Policy | None, now: float
                   ) -> tuple[charts.Chart, ...]:
    """Return the charts of the rollout's gate values, with its transitions marked."""
    samples = queries.evaluation_values(session, rollout.id)
    moves = [charts.Transition(t.at, t.action, f"{utc(t.at)} · {t.action} by {t.actor}: {t.reason}")
             for t in queries.rollout_transitions(session, rollout.id) if t.action != "start"]
    end = rollout.ended_at.timestamp() if rollout.ended_at else now
    limits = _limits(policy, rollout.stage)
    return tuple(
        charts.line_chart(key, [(at, _number(values.get(key))) for at, values in samples], title=title,
                          span=(rollout.started_at.timestamp(), end), transitions=moves,
                          threshold=limits.get(key), fmt=partial(figure, name=key), ceiling=CEILINGS.get(key))
        for key, title in SERIES)


def _limits(policy: Policy | None, stage: str) -> dict[str, float]:
    if policy is None:
        return {}
    gate: TierGate = policy.expansion.gate if stage == "expansion" else policy.canary.gate
    return {"error_rate": gate.max_error_rate, "p95_latency_s": gate.max_p95_latency_s,
            "cost_per_session": gate.max_cost_per_session_micros / 1_000_000}


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)
