"""The story of a rollout on the agent page: its history timeline and the charts of its gate values."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from sqlmodel import Session

from gatekeeper.api.schemas import HistoryEntry, RolloutView
from gatekeeper.api.views import history_entries
from gatekeeper.core.policy import Policy, TierGate
from gatekeeper.policy_store import PolicyStore
from gatekeeper.store import arm_series, dashboard_records, rollout_records
from gatekeeper.store.models import Agent
from gatekeeper.web import charts
from gatekeeper.web.filters import figure, label, utc
from gatekeeper.web.presenters import compare_row

PER_PAGE = 25
CEILINGS = {"error_rate": 1.0, "traffic_percent": 100.0}  # shares: the axis never runs past 100%
PEOPLE = ("user:", "release_manager:")
BASELINE_KEYS = ("error_rate", "p95_latency_s", "cost_per_session")
MAX_BUCKETS = 48
COMPARED = {"error_rate vs stable": "error_rate", "p95_latency vs stable": "p95_latency_s",
            "cost_per_session vs stable": "cost_per_session"}
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


def timeline(db: Session, agent: Agent, *, policies: PolicyStore, page: int, include_gates: bool
             ) -> Timeline:
    """Return one page of an agent's history, newest first (transitions only unless asked)."""
    kinds = ("transition", "gate_evaluation") if include_gates else ("transition",)
    page = max(1, page)
    rows, total = rollout_records.history(agent.id or 0, limit=PER_PAGE, offset=(page - 1) * PER_PAGE,
                                          kinds=kinds, db=db)
    entries = tuple(_entry(item) for item in history_entries(db, policies, agent, rows))
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


def rollout_charts(db: Session, rollout: RolloutView, *, policy: Policy | None, now: float,
                   report: dict[str, Any] | None = None) -> tuple[charts.Chart, ...]:
    """Return the charts of the rollout's gate values beside stable's, with transitions and comparisons."""
    samples = dashboard_records.evaluation_values(rollout.id, db=db)
    moves = [charts.Transition(t.at, t.action, f"{utc(t.at)} · {t.action} by {t.actor}: {t.reason}")
             for t in dashboard_records.rollout_transitions(rollout.id, db=db) if t.action != "start"]
    span = (rollout.started_at.timestamp(), rollout.ended_at.timestamp() if rollout.ended_at else now)
    width = bucket_width(span)
    stable = stable_series(arm_series.arm_buckets(rollout.id, arm="stable", span=span, width_s=width, db=db),
                           span=span, width_s=width)
    limits, compared = _limits(policy, rollout.stage), comparisons(report or {})
    return tuple(
        charts.line_chart(key, [(at, _number(values.get(key))) for at, values in samples], title=title,
                          span=span, transitions=moves, threshold=limits.get(key), fmt=partial(figure, name=key),
                          ceiling=CEILINGS.get(key), baseline=stable.get(key, ()),
                          baseline_label=f"stable, per {step_text(width)}" if key in stable else "",
                          comparison=compared.get(key, ""))
        for key, title in SERIES)


def bucket_width(span: tuple[float, float]) -> float:
    """Return the stable series' bucket: a round step of at least a minute, at most MAX_BUCKETS over the span."""
    wanted = max(span[1] - span[0], 0.0) / MAX_BUCKETS
    return float(next((s for s in charts.TIME_STEPS if s >= max(wanted, 60)), charts.TIME_STEPS[-1]))


def step_text(seconds: float) -> str:
    """Render a bucket's width in its largest whole unit: `30 s`, `5 min`, `2 h`, `1 d`."""
    whole = int(seconds)
    unit = next(((size, name) for size, name in ((86400, "d"), (3600, "h"), (60, "min")) if whole % size == 0),
                (1, "s"))
    return f"{whole // unit[0]} {unit[1]}"


def stable_series(buckets: Mapping[int, arm_series.Bucket], *, span: tuple[float, float], width_s: float
                  ) -> dict[str, list[tuple[float, float | None]]]:
    """Return stable's error rate, p95 latency and cost per session per bucket, drawn at each bucket's end.

    A bucket without traffic is a gap (None), never a zero.
    """
    first, last = int(span[0] // width_s), int(span[1] // width_s)
    out: dict[str, list[tuple[float, float | None]]] = {key: [] for key in BASELINE_KEYS}
    for index in range(first, last + 1):
        at, bucket = min((index + 1) * width_s, span[1]), buckets.get(index, arm_series.Bucket())
        out["error_rate"].append((at, bucket.errors / bucket.calls if bucket.calls else None))
        out["p95_latency_s"].append((at, _p95_ms(bucket.latencies_ms) / 1000 if bucket.latencies_ms else None))
        out["cost_per_session"].append((at, bucket.spend_micros / 1_000_000 / bucket.sessions
                                        if bucket.sessions else None))
    return out


def _p95_ms(bins: Sequence[tuple[int, int]]) -> float:
    """Return the nearest-rank 95th percentile of a (value, count) histogram, as the built-in gate computes it."""
    ordered = sorted(bins)
    rank, seen = math.ceil(0.95 * sum(n for _, n in ordered)), 0
    for value, n in ordered:
        seen += n
        if seen >= rank:
            return float(value)
    return float(ordered[-1][0])


def comparisons(report: dict[str, Any]) -> dict[str, str]:
    """Return, per chart, the current gate report's comparison with stable as one sentence."""
    out = {}
    for check in report.get("checks") or []:
        raw = check.get("compare") if isinstance(check, dict) else None
        key = COMPARED.get(str(check.get("name"))) if isinstance(raw, dict) else None
        if key is not None and isinstance(raw, dict) and raw.get("estimate") is not None:
            row, level = compare_row(raw), raw.get("confidence")
            confidence = f"{level:.0%} " if isinstance(level, int | float) else ""
            out[key] = (f"Candidate vs stable: {row.estimate}, {confidence}interval {row.interval}, "
                        f"margin ≤ {row.margin} ({str(check.get('result')).replace('_', ' ')})")
    return out


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
