"""The Prometheus metrics source: PromQL via prometheus-api-client, one query per metric and window.

`sum by (agent, version, arm) (...)` answers for all agents at once; every query has a timeout;
a pybreaker breaker makes an outage fail fast and show as "metrics unavailable" instead of
stalling every cycle. While the breaker is open each cycle sends one probe, and the first that
succeeds closes it, so evaluation resumes at the first cycle after the outage.
"""

from __future__ import annotations

import logging
import math
import re
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pybreaker
import requests
from prometheus_api_client import PrometheusApiClientException, PrometheusConnect
from urllib3.util.retry import Retry

from gatekeeper.core.comparison import ArmEvidence, ArmSample, Distribution, Moments
from gatekeeper.core.gates import SourceStatus
from gatekeeper.core.tier_gate import TierSignals
from gatekeeper.tier_signals import (
    Key,
    MetricsUnavailable,
    QueryRejected,
    SignalBatch,
    SignalRequest,
    by_window,
    known,
    short_error,
    window_text,
)

log = logging.getLogger(__name__)

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
                raise QueryRejected(short_error(exc)) from None
            self._cause = _failure_text(exc)
            raise MetricsUnavailable(f"{self._cause or short_error(exc)} at {self.url}") from None
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
        for window_s, group in by_window(clamped).items():
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
            raise MetricsUnavailable(f"{type(exc).__name__}: {short_error(exc)}") from None
        except PrometheusApiClientException as exc:
            raise MetricsUnavailable(short_error(exc)) from None
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


def _signals_from(values: Mapping[str, Mapping[Key, float]], key: Key) -> TierSignals:
    return known(TierSignals(sessions=values["sessions"].get(key), tool_calls=values["tool_calls"].get(key),
                             errors=values["errors"].get(key), p95_latency_s=values["p95_latency_s"].get(key),
                             spend_dollars=values["spend_dollars"].get(key), overruns=values["overruns"].get(key)))


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
        return f"{type(exc).__name__}: {short_error(exc)}"
    if isinstance(exc, PrometheusApiClientException):
        return short_error(exc)
    return None
