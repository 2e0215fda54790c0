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

import logging
import math
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Protocol

import pybreaker
import requests
from prometheus_api_client import PrometheusApiClientException, PrometheusConnect
from sqlalchemy import and_, case, or_
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session, col, func, select
from urllib3.util.retry import Retry

from gatekeeper.config import Settings
from gatekeeper.core.comparison import ArmEvidence, ArmSample, Distribution, Moments
from gatekeeper.core.gates import SourceStatus, TierSignals
from gatekeeper.core.policy import ExtraQuery
from gatekeeper.store import arm_traffic
from gatekeeper.store.db import Database
from gatekeeper.store.models import AgentSession, Decision

log = logging.getLogger(__name__)

Key = tuple[str, str]  # (agent, candidate version)


@dataclass(frozen=True)
class SignalRequest:
    """One candidate whose tier-gate numbers are wanted, over its policy's window."""

    agent: str
    version: str
    rollout_id: int
    window_s: float
    queries: tuple[ExtraQuery, ...] = ()
    tier_started_at: float | None = None  # the window never reaches back before the tier began
    compare: bool = False  # also wanted: both arms since the tier began (`gate.compare`)

    @property
    def key(self) -> Key:
        return (self.agent, self.version)

    def clamped_window_s(self, *, now: float) -> float:
        """Return the window, cut at the tier's start so that an earlier stage's traffic never counts."""
        if self.tier_started_at is None:
            return self.window_s
        return max(0.0, min(self.window_s, now - self.tier_started_at))


@dataclass(frozen=True)
class SignalBatch:
    """The answer to one cycle's requests: the source's status and each candidate's numbers."""

    status: SourceStatus
    signals: Mapping[Key, TierSignals] = field(default_factory=dict)
    queries: int = 0

    def for_request(self, request: SignalRequest) -> TierSignals | None:
        """Return the candidate's numbers; None when the source was unavailable."""
        if not self.status.available:
            return None
        return self.signals.get(request.key, TierSignals())


class MetricsSource(Protocol):
    """Anything that can answer a cycle's signal requests."""

    name: str

    def tier_signals(self, requests: Sequence[SignalRequest], *, now: float) -> SignalBatch: ...


class MetricsUnavailable(Exception):
    """The source did not answer (refused, timed out, 5xx, or the breaker is open)."""


class QueryRejected(Exception):
    """Prometheus answered but refused the query (bad PromQL): an error of that check only."""


def build_source(settings: Settings, db: Database) -> MetricsSource:
    """Return Prometheus when GATEKEEPER_PROMETHEUS_URL is set, else the built-in source."""
    if settings.prometheus_url:
        return PrometheusSource(settings.prometheus_url, timeout_s=settings.prometheus_timeout_s,
                                fail_max=settings.prometheus_fail_max,
                                reset_timeout_s=settings.prometheus_reset_timeout_s)
    return BuiltinSource(db)


def window_text(seconds: float) -> str:
    """Render a window as a PromQL duration such as `600s`."""
    return f"{max(1, round(seconds))}s"


# -- Prometheus -----------------------------------------------------------------------------

_BY = "sum by (agent, version, arm)"
PROMQL: Mapping[str, str] = {
    "sessions": f'{_BY} (increase(gatekeeper_sessions_total{{arm="candidate"}}[WINDOW]))',
    "tool_calls": f'{_BY} (increase(gatekeeper_tool_calls_total{{arm="candidate"}}[WINDOW]))',
    "errors": f'{_BY} (increase(gatekeeper_tool_calls_total{{arm="candidate",status="error"}}[WINDOW]))',
    "p95_latency_s": "histogram_quantile(0.95, sum by (agent, version, arm, le) "
                     '(rate(gatekeeper_tool_call_latency_seconds_bucket{arm="candidate"}[WINDOW])))',
    "spend_dollars": f'{_BY} (increase(gatekeeper_spend_dollars_total{{arm="candidate"}}[WINDOW]))',
    "overruns": f'{_BY} (increase(gatekeeper_cost_overruns_total{{arm="candidate"}}[WINDOW]))',
}
# `gate.compare` from Prometheus: per-arm counters and the latency histogram, one step at a time.
# A histogram allows the quantile's bounds at bucket resolution (core.comparison.Distribution) and
# its point estimate by interpolation; counters allow the per-call error rate. Session-level
# statistics need each session's value, which counters and histograms do not keep.
ARM_PROMQL: Mapping[str, str] = {
    "calls": f"{_BY} (increase(gatekeeper_tool_calls_total[STEP]))",
    "errors": f'{_BY} (increase(gatekeeper_tool_calls_total{{status="error"}}[STEP]))',
    "latency": "sum by (agent, version, arm, le) (increase(gatekeeper_tool_call_latency_seconds_bucket[STEP]))",
}
MAX_ARM_STEPS = 10_000  # Prometheus answers at most 11,000 points per series
SESSION_NOTE = ("Prometheus keeps sessions and spend as totals, not per session: compare {metric} with the "
                "built-in source")
_QUERY_ERROR_STATUS = re.compile(r"HTTP Status Code (400|422)\b")
_ERRNO = re.compile(r"\[Errno -?\d+\] ([^\"')]+)")
PROBE = "vector(1)"  # the cheapest query Prometheus answers: is it back?


def _is_query_error(exc: BaseException) -> bool:
    """Bad PromQL is the query's fault, not an outage: it must not trip the breaker."""
    return isinstance(exc, PrometheusApiClientException) and bool(_QUERY_ERROR_STATUS.search(str(exc)))


class PrometheusSource:
    """Read the tier gate's numbers from Prometheus, batched per metric across every agent."""

    name = "prometheus"

    def __init__(self, url: str, *, timeout_s: float = 5.0, fail_max: int = 3, reset_timeout_s: float = 30.0,
                 arm_step_s: float = 30.0) -> None:
        # No client-side retries: the breaker and the next cycle are the retry, so an outage costs
        # one timeout per query at most and then nothing while the breaker is open.
        self._client = PrometheusConnect(url=url, retry=Retry(total=0, raise_on_status=False),
                                         timeout=timeout_s)
        self.timeout_s = timeout_s
        self.breaker = pybreaker.CircuitBreaker(fail_max=fail_max, reset_timeout=reset_timeout_s,
                                                exclude=[_is_query_error], name="prometheus")
        self.url = url
        self.fail_max = fail_max
        self.queries_sent = 0
        self.arm_step_s = arm_step_s  # resolution of `gate.compare`'s per-arm sums (see arm_signals)
        self._down_since: float | None = None
        self._error: str | None = None
        self._cause: str | None = None  # the last real failure; a breaker message never lands here

    def status(self) -> SourceStatus:
        """Return whether Prometheus answered the last cycle, and since when it has not."""
        return SourceStatus(self.name, self._down_since is None, self._down_since, self._error)

    def tier_signals(self, requests: Sequence[SignalRequest], *, now: float) -> SignalBatch:
        """Query each metric once per window for all requests, then each extra PromQL check."""
        before = self.queries_sent
        self._probe(now=now)
        try:
            signals = self._collect(requests, now=now)
        except MetricsUnavailable as exc:
            self._down_since = self._down_since if self._down_since is not None else now
            self._error = str(exc)
            log.warning("prometheus unavailable: %s", exc)
            return SignalBatch(self.status(), {}, self.queries_sent - before)
        self._down_since, self._error, self._cause = None, None, None
        return SignalBatch(self.status(), signals, self.queries_sent - before)

    def query(self, expr: str, *, now: float) -> list[dict[str, Any]]:
        """Run one instant query at `now` through the breaker, with the timeout."""
        self.queries_sent += 1
        try:
            result: list[dict[str, Any]] = self.breaker.call(
                self._client.custom_query, expr, params={"time": f"{now:.3f}"}, timeout=self.timeout_s)
        except pybreaker.CircuitBreakerError as exc:
            # The failure that opens the breaker arrives wrapped: keep what really went wrong.
            if (failure := _failure_text(exc.__cause__ or exc.__context__)) is not None:
                self._cause = failure
            raise MetricsUnavailable(f"circuit open after {self.fail_max} failed queries; last error: "
                                     f"{self._cause or 'no answer'} at {self.url}") from None
        except (requests.RequestException, PrometheusApiClientException) as exc:
            if _is_query_error(exc):
                raise QueryRejected(_short(exc)) from None
            self._cause = _failure_text(exc)
            raise MetricsUnavailable(f"{self._cause or _short(exc)} at {self.url}") from None
        return result

    def _probe(self, *, now: float) -> None:
        """While the breaker is open, ask once whether Prometheus is back, and close the breaker if it is."""
        if self.breaker.current_state != pybreaker.STATE_OPEN:
            return
        self.queries_sent += 1
        try:
            self._client.custom_query(PROBE, params={"time": f"{now:.3f}"}, timeout=self.timeout_s)
        except (requests.RequestException, PrometheusApiClientException) as exc:
            self._cause = _failure_text(exc) or self._cause
            return
        log.info("prometheus answers again; the circuit breaker closes")
        self.breaker.close()

    def _collect(self, requests: Sequence[SignalRequest], *, now: float) -> dict[Key, TierSignals]:
        signals: dict[Key, TierSignals] = {}
        clamped = [replace(r, window_s=prometheus_window(r, now=now)) for r in requests]
        for window_s, group in _by_window(clamped).items():
            if window_s <= 0:  # the tier is younger than one step of its window: nothing to judge yet
                signals.update({r.key: TierSignals() for r in group})
                continue
            values = {metric: self._vector(expr.replace("WINDOW", window_text(window_s)), now=now)
                      for metric, expr in PROMQL.items()}
            for request in group:
                signals[request.key] = self._with_extras(_signals_from(values, request.key), request, now=now)
        comparing = [r for r in requests if r.compare]
        if comparing:
            arms = self.arm_signals(comparing, now=now)
            signals.update({r.key: replace(signals[r.key], arms=arms[r.key]) for r in comparing})
        return signals

    def arm_signals(self, requests: Sequence[SignalRequest], *, now: float) -> dict[Key, ArmEvidence]:
        """Return both arms' calls, errors and latency histogram since each tier began: three range queries.

        Each range query steps `arm_step_s` back from `now` over the oldest tier among the requests,
        `increase` over one step at each point, for every agent at once; a request sums the steps
        that lie wholly inside its own tier, so per-agent windows cost no extra query.
        """
        starts = {r.key: r.tier_started_at if r.tier_started_at is not None else now - r.window_s for r in requests}
        step = self.arm_step_s
        steps = min(MAX_ARM_STEPS, max(1, math.floor(max(now - start for start in starts.values()) / step)))
        series = {name: self.query_range(expr.replace("STEP", window_text(step)), start=now - steps * step,
                                         end=now, step=step) for name, expr in ARM_PROMQL.items()}
        return {r.key: _arms_from(series, r, since=starts[r.key], step=step) for r in requests}

    def query_range(self, expr: str, *, start: float, end: float, step: float) -> list[dict[str, Any]]:
        """Run one range query through the breaker, with the timeout, as `query` does."""
        self.queries_sent += 1
        try:
            result: list[dict[str, Any]] = self.breaker.call(
                self._client.custom_query_range, expr, start_time=datetime.fromtimestamp(start, UTC),
                end_time=datetime.fromtimestamp(end, UTC), step=window_text(step), timeout=self.timeout_s)
        except pybreaker.CircuitBreakerError:
            raise MetricsUnavailable(f"circuit open after repeated failures ({self._error or 'no answer'})"
                                     ) from None
        except requests.RequestException as exc:
            raise MetricsUnavailable(f"{type(exc).__name__}: {_short(exc)}") from None
        except PrometheusApiClientException as exc:
            raise MetricsUnavailable(_short(exc)) from None
        return result

    def _vector(self, expr: str, *, now: float) -> dict[Key, float]:
        out: dict[Key, float] = {}
        for sample in self.query(expr, now=now):
            labels = sample.get("metric", {})
            if labels.get("arm", "candidate") == "candidate":
                out[(labels.get("agent", ""), labels.get("version", ""))] = float(sample["value"][1])
        return out

    def _with_extras(self, signals: TierSignals, request: SignalRequest, *, now: float) -> TierSignals:
        extra: dict[str, float | None] = {}
        errors: dict[str, str] = {}
        for query in request.queries:
            expr = query.render(agent=request.agent, version=request.version,
                                window=window_text(request.window_s))
            try:
                extra[query.name] = _single_value(self.query(expr, now=now))
            except (QueryRejected, ValueError) as exc:
                errors[query.name] = str(exc)
        return replace(signals, extra=extra, extra_errors=errors)


WINDOW_STEPS = 10


def prometheus_window(request: SignalRequest, *, now: float) -> float:
    """Return the request's window cut at its tier's start, rounded down to a tenth of the full window.

    The cut keeps an earlier stage's traffic out: in shadow the candidate's mirrored calls carry
    arm="candidate" too, and a 10-minute range would count them as first-canary evidence. Rounding
    down (never up, so never before the tier began) bounds the distinct ranges by WINDOW_STEPS per
    policy window, so the number of queries still does not grow with the number of agents.
    """
    clamped = request.clamped_window_s(now=now)
    if clamped >= request.window_s:
        return request.window_s
    step = request.window_s / WINDOW_STEPS
    return math.floor(clamped / step) * step


def _by_window(requests: Iterable[SignalRequest]) -> dict[float, list[SignalRequest]]:
    groups: dict[float, list[SignalRequest]] = defaultdict(list)
    for request in requests:
        groups[request.window_s].append(request)
    return groups


def _signals_from(values: Mapping[str, Mapping[Key, float]], key: Key) -> TierSignals:
    calls = values["tool_calls"].get(key)
    # No error series while calls exist means no call failed, not that nothing is known.
    errors = values["errors"].get(key, 0.0 if calls is not None else None)
    overruns = values["overruns"].get(key, 0.0 if calls is not None else None)
    return TierSignals(sessions=values["sessions"].get(key), tool_calls=calls, errors=errors,
                       p95_latency_s=values["p95_latency_s"].get(key),
                       spend_dollars=values["spend_dollars"].get(key), overruns=overruns)


def _arms_from(series: Mapping[str, list[dict[str, Any]]], request: SignalRequest, *, since: float, step: float
               ) -> ArmEvidence:
    """Sum the steps wholly inside the request's tier into both arms' evidence."""
    totals: dict[tuple[str, str, str], float] = defaultdict(float)
    for name, found in series.items():
        for item in found:
            labels = item.get("metric", {})
            if labels.get("agent") != request.agent:
                continue
            arm = labels.get("arm", "")
            if arm == "candidate" and labels.get("version") != request.version:
                continue
            inside = sum(_number(v) for t, v in item.get("values", []) if float(t) - step >= since - 1e-6)
            totals[(name, arm, labels.get("le", ""))] += inside
    samples = {arm: ArmSample(calls=Moments.binary(totals[("errors", arm, "")], totals[("calls", arm, "")]),
                              latency=Distribution.of_histogram(
                                  [(float(le), count) for (name, a, le), count in totals.items()
                                   if name == "latency" and a == arm]))
               for arm in ("candidate", "stable")}
    notes = tuple((metric, SESSION_NOTE.format(metric=metric)) for metric in ("session_error_rate",
                                                                              "cost_per_session"))
    return ArmEvidence(samples["candidate"], samples["stable"], notes)


def _number(value: object) -> float:
    number = float(str(value))
    return number if math.isfinite(number) else 0.0


def _single_value(result: list[dict[str, Any]]) -> float | None:
    if not result:
        return None
    if len(result) > 1:
        raise ValueError(f"returned {len(result)} series; a gate query must return one")
    return float(result[0]["value"][1])


def _failure_text(exc: BaseException | None) -> str | None:
    """Return one short line saying what a failed request hit, or None for anything else."""
    if isinstance(exc, requests.Timeout):
        return f"{type(exc).__name__}: no answer within the query timeout"
    if isinstance(exc, requests.ConnectionError):
        found = _ERRNO.search(str(exc))
        return f"ConnectionError: {found.group(1).strip() if found else 'cannot connect'}"
    if isinstance(exc, requests.RequestException):
        return f"{type(exc).__name__}: {_short(exc)}"
    if isinstance(exc, PrometheusApiClientException):
        return _short(exc)
    return None


def _short(exc: BaseException) -> str:
    return str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__


# -- built-in (the gatekeeper's own database) -----------------------------------------------


class BuiltinSource:
    """Compute the tier gate's numbers from sessions and decisions: live, non-mirrored candidate traffic.

    Every window is cut at its tier's start, as Prometheus's is: an earlier tier's traffic never counts.
    """

    name = "builtin"
    PROMQL_NOTE = "PromQL checks need Prometheus: set GATEKEEPER_PROMETHEUS_URL"

    def __init__(self, db: Database) -> None:
        self.db = db
        self._down_since: float | None = None

    def tier_signals(self, requests: Sequence[SignalRequest], *, now: float) -> SignalBatch:
        """Run three grouped queries per window for all requests, and three more for all comparisons."""
        queries = 0
        signals: dict[Key, TierSignals] = {}
        try:
            with self.db.reading() as session:
                for window_s, group in _by_window(requests).items():
                    signals.update(self._window(session, group, since=_tier_starts(group, now - window_s), now=now))
                    queries += 3
                comparing = [r for r in requests if r.compare]
                if comparing:
                    starts = {r.rollout_id: r.tier_started_at if r.tier_started_at is not None else now - r.window_s
                              for r in comparing}
                    arms = arm_traffic.arm_evidence(session, starts, now=now)
                    signals.update({r.key: replace(signals[r.key], arms=arms.get(r.rollout_id, arm_traffic.NO_ARMS))
                                    for r in comparing})
                    queries += 3
        except SQLAlchemyError as exc:
            self._down_since = self._down_since if self._down_since is not None else now
            return SignalBatch(SourceStatus(self.name, False, self._down_since, _short(exc)), {}, queries)
        self._down_since = None
        return SignalBatch(SourceStatus(self.name), signals, queries)

    def _window(self, session: Session, group: Sequence[SignalRequest], *, since: Mapping[int, float], now: float
                ) -> dict[Key, TierSignals]:
        ids = [r.rollout_id for r in group]
        sessions = _session_counts(session, ids, since=since, now=now)
        outcomes = _outcome_counts(session, ids, since=since, now=now)
        latencies = _latencies(session, ids, since=since, now=now)
        out = {}
        for request in group:
            count, spend = sessions.get(request.rollout_id, (0, 0))
            calls, errors, overruns = outcomes.get(request.rollout_id, (0, 0, 0))
            notes = {q.name: self.PROMQL_NOTE for q in request.queries}
            out[request.key] = TierSignals(
                sessions=float(count), tool_calls=float(calls), errors=float(errors),
                p95_latency_s=percentile(latencies.get(request.rollout_id, []), 0.95),
                spend_dollars=spend / 1_000_000, overruns=float(overruns),
                extra={q.name: None for q in request.queries}, notes=notes)
        return out


def _tier_starts(group: Sequence[SignalRequest], window_start: float) -> dict[int, float]:
    """Map each rollout to where its window begins: the window's start, or its tier's start if later."""
    return {r.rollout_id: max(window_start, r.tier_started_at if r.tier_started_at is not None else window_start)
            for r in group}


def _since(since: Mapping[int, float], column: Any) -> Any:
    """Traffic of each rollout after its own window start (a tier's first instant counts, as in arm_traffic)."""
    return or_(*(and_(col(AgentSession.rollout_id) == rid, column >= start) for rid, start in since.items()))


def _live_candidate(ids: Sequence[int]) -> list[Any]:
    return [col(AgentSession.rollout_id).in_(ids), AgentSession.arm == "candidate",
            AgentSession.environment == "live", col(AgentSession.mirror_of).is_(None)]


def _session_counts(session: Session, ids: Sequence[int], *, since: Mapping[int, float], now: float
                    ) -> dict[int, tuple[int, int]]:
    query = (select(AgentSession.rollout_id, func.count(), func.coalesce(func.sum(AgentSession.spend_micros), 0))
             .where(*_live_candidate(ids), _since(since, col(AgentSession.started_at)), AgentSession.started_at <= now)
             .group_by(col(AgentSession.rollout_id)))
    return {int(rid): (int(n), int(spend)) for rid, n, spend in session.exec(query) if rid is not None}


def _decided(ids: Sequence[int], *, since: Mapping[int, float], now: float) -> list[Any]:
    return [col(Decision.rollout_id).in_(ids), Decision.arm == "candidate", _since(since, col(Decision.outcome_at)),
            col(Decision.outcome_at) <= now, *_live_candidate(ids)]


def _outcome_counts(session: Session, ids: Sequence[int], *, since: Mapping[int, float], now: float
                    ) -> dict[int, tuple[int, int, int]]:
    errors = func.sum(case((col(Decision.outcome_status) == "error", 1), else_=0))
    overruns = func.sum(case((col(Decision.overrun_micros) > 0, 1), else_=0))
    query = (select(Decision.rollout_id, func.count(), func.coalesce(errors, 0), func.coalesce(overruns, 0))
             .join(AgentSession, col(AgentSession.id) == Decision.session_id)
             .where(*_decided(ids, since=since, now=now)).group_by(col(Decision.rollout_id)))
    return {int(rid): (int(n), int(e), int(o)) for rid, n, e, o in session.exec(query) if rid is not None}


def _latencies(session: Session, ids: Sequence[int], *, since: Mapping[int, float], now: float
               ) -> dict[int, list[float]]:
    query = (select(Decision.rollout_id, Decision.latency_ms)
             .join(AgentSession, col(AgentSession.id) == Decision.session_id)
             .where(*_decided(ids, since=since, now=now), col(Decision.latency_ms).is_not(None)))
    out: dict[int, list[float]] = defaultdict(list)
    for rid, latency_ms in session.exec(query):
        out[int(rid or 0)].append((latency_ms or 0.0) / 1000)
    return out


def percentile(values: Sequence[float], q: float) -> float | None:
    """Return the nearest-rank percentile `q` (0..1) of the values, or None when there are none."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


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
        return SignalBatch(SourceStatus(self.name), {k: v for k, v in self.signals.items() if k in wanted}, 1)
