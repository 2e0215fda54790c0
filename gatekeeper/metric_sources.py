"""Metrics sources: where the tier gate's numbers come from, behind one interface.

    MetricsSource (protocol)   tier_signals(requests, now=) -> SignalBatch
    ├── PrometheusSource       PromQL via prometheus-api-client: one query per metric and window for
    │                          all agents at once (`sum by (agent, version, arm) (...)`), a timeout on
    │                          every query, and a pybreaker breaker so an outage fails fast and shows
    │                          as "metrics unavailable" instead of stalling every cycle; while the
    │                          breaker is open each cycle sends one probe, and the first that succeeds
    │                          closes it, so evaluation resumes at the first cycle after the outage
    ├── BuiltinSource          the same numbers from the gatekeeper's own sessions and decisions
    │                          (the embedded default when no Prometheus is configured)
    └── InMemorySource         a fake for tests, behind the same interface

A source never raises for an outage: the batch's `status` says the source is unavailable and
the gate holds. A single PromQL check that Prometheus rejects is an `error` of that check only.
An outage reads as one message per cycle, the last real failure (never a message wrapping the
previous cycle's message).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace

from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session

from gatekeeper.config import Settings
from gatekeeper.core.gates import SourceStatus
from gatekeeper.core.tier_gate import TierSignals
from gatekeeper.prometheus_source import PrometheusSource
from gatekeeper.store import arm_traffic, tier_traffic
from gatekeeper.store.db import Database
from gatekeeper.tier_signals import (
    Key,
    MetricsSource,
    SignalBatch,
    SignalRequest,
    by_window,
    known,
    percentile,
    short_error,
)


def build_source(settings: Settings, db: Database) -> MetricsSource:
    """Return Prometheus when GATEKEEPER_PROMETHEUS_URL is set, else the built-in source."""
    if settings.prometheus_url:
        return PrometheusSource(settings.prometheus_url, timeout_s=settings.prometheus_timeout_s,
                                fail_max=settings.prometheus_fail_max,
                                reset_timeout_s=settings.prometheus_reset_timeout_s)
    return BuiltinSource(db)


# -- built-in (the gatekeeper's own database) -----------------------------------------------


class BuiltinSource:
    """Compute the tier gate's numbers from sessions and decisions: live, non-mirrored candidate traffic.

    Every window is cut at its tier's start, as Prometheus's is: an earlier tier's traffic never counts.
    """

    name = "builtin"
    CHUNK = 1000  # rollouts per query
    PROMQL_NOTE = "PromQL checks need Prometheus: set GATEKEEPER_PROMETHEUS_URL"

    def __init__(self, db: Database) -> None:
        self.db = db
        self._down_since: float | None = None

    def tier_signals(self, requests: Sequence[SignalRequest], *, now: float) -> SignalBatch:
        """Run three grouped queries per window for all requests, and three more for all comparisons.

        Every CHUNK rollouts take three more: a query names each rollout two or three times, and
        databases bound the parameters of one statement (SQLite: 32,766).
        """
        queries = 0
        signals: dict[Key, TierSignals] = {}
        try:
            with self.db.reading() as db:
                for window_s, group in by_window(requests).items():
                    for part in _chunks(group, self.CHUNK):
                        signals.update(self._window(db, part, since=_tier_starts(part, now - window_s), now=now))
                        queries += 3
                for part in _chunks([r for r in requests if r.compare], self.CHUNK):
                    starts = {r.rollout_id: r.tier_started_at if r.tier_started_at is not None else now - r.window_s
                              for r in part}
                    arms = arm_traffic.arm_evidence(starts, now=now, db=db)
                    signals.update({r.key: replace(signals[r.key], arms=arms.get(r.rollout_id, arm_traffic.NO_ARMS))
                                    for r in part})
                    queries += 3
        except SQLAlchemyError as exc:
            self._down_since = self._down_since if self._down_since is not None else now
            return SignalBatch(SourceStatus(self.name, False, self._down_since, short_error(exc)), {}, queries)
        self._down_since = None
        return SignalBatch(SourceStatus(self.name), signals, queries)

    def _window(self, db: Session, group: Sequence[SignalRequest], *, since: Mapping[int, float], now: float
                ) -> dict[Key, TierSignals]:
        sessions = tier_traffic.session_counts(since, now=now, db=db)
        outcomes = tier_traffic.outcome_counts(since, now=now, db=db)
        latencies = tier_traffic.latencies(since, now=now, db=db)
        out = {}
        for request in group:
            count, spend = sessions.get(request.rollout_id, (0, 0))
            calls, errors, overruns = outcomes.get(request.rollout_id, (0, 0, 0))
            notes = {q.name: self.PROMQL_NOTE for q in request.queries}
            out[request.key] = known(TierSignals(
                sessions=float(count), tool_calls=float(calls), errors=float(errors),
                p95_latency_s=percentile(latencies.get(request.rollout_id, []), 0.95),
                spend_dollars=spend / 1_000_000, overruns=float(overruns),
                extra={q.name: None for q in request.queries}, notes=notes))
        return out


def _chunks(requests: Sequence[SignalRequest], size: int) -> list[Sequence[SignalRequest]]:
    return [requests[start:start + size] for start in range(0, len(requests), size)]


def _tier_starts(group: Sequence[SignalRequest], window_start: float) -> dict[int, float]:
    """Map each rollout to where its window begins: the window's start, or its tier's start if later."""
    return {r.rollout_id: max(window_start, r.tier_started_at if r.tier_started_at is not None else window_start)
            for r in group}


# -- the fake -------------------------------------------------------------------------------


class InMemorySource:
    """A metrics source for tests: set numbers per (agent, version); `fail()` simulates an outage."""

    name = "memory"

    def __init__(self, signals: Mapping[Key, TierSignals] | None = None) -> None:
        self.signals: dict[Key, TierSignals] = dict(signals or {})
        self.error: str | None = None
        self.requests: list[SignalRequest] = []
        self._down_since: float | None = None

    def set(self, agent: str, version: str, signals: TierSignals) -> None:
        """Set the numbers of one candidate."""
        self.signals[(agent, version)] = signals

    def fail(self, error: str = "connection refused") -> None:
        """Make every following cycle see an outage."""
        self.error = error

    def recover(self) -> None:
        """End the simulated outage."""
        self.error = None

    def tier_signals(self, requests: Sequence[SignalRequest], *, now: float) -> SignalBatch:
        """Answer from the stored numbers, or report the simulated outage."""
        self.requests.extend(requests)
        if self.error is not None:
            self._down_since = self._down_since if self._down_since is not None else now
            return SignalBatch(SourceStatus(self.name, False, self._down_since, self.error), {}, 1)
        self._down_since = None
        wanted = {r.key for r in requests}
        return SignalBatch(SourceStatus(self.name), {k: known(v) for k, v in self.signals.items() if k in wanted}, 1)
