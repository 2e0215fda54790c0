"""Canary analysis: the candidate arm against the stable arm, valid however often it is looked at.

The tier gate is evaluated every interval, so a fixed-sample test read again and again would
declare a difference far more often than its nominal level. Every interval here is a
**confidence sequence**: it covers the true value at every evaluation at once, with probability
at least `confidence`, so looking every 30 s costs nothing.

Method
------
- Means and rates use the *asymptotic confidence sequence* of Waudby-Smith, Arnold, Howard and
  Ramdas, "Time-uniform central limit theory and asymptotic confidence sequences", Annals of
  Statistics 52(6), 2024 (arXiv:2103.06476), Theorem 2.2: the two-sided normal-mixture boundary
  of Robbins (1970) and Howard, Ramdas, McAuliffe and Sekhon, "Time-uniform, nonparametric,
  nonasymptotic confidence sequences", Annals of Statistics 49(2), 2021, eq. (14), applied to a
  CLT-approximated sum. For an estimate with standard error SE after n units the half-width is

      SE * sqrt((1 + 1/(n rho^2)) * log((n rho^2 + 1) / alpha^2)),
      rho^2 = (-2 log alpha + log(1 - 2 log alpha)) / n_planned,

  tightest near `n_planned` units (the paper's choice of rho). This is the boundary Eppo and
  LaunchDarkly-style guarded rollouts use.
- A relative margin ("at most 50% worse than stable") is the linear contrast
  `candidate - (1 + margin) * stable`, whose confidence sequence decides pass and fail exactly;
  the interval of the relative increase shown to people is its inversion (Fieller, "Some problems
  in interval estimation", JRSS B 16(2), 1954), which agrees with that decision.
- The p95 uses the quantile confidence sequence of Howard and Ramdas, "Sequential estimation of
  quantiles with applications to A/B-testing and best-arm identification", Bernoulli 28(3), 2022:
  a confidence sequence for P(X <= q) = 0.95 at the true quantile turns into order statistics
  (or histogram bucket bounds) that bracket q; the two arms' brackets give the ratio's interval,
  each arm at half the error budget.

Results are kept apart as Argo Rollouts keeps its phases apart: `pass` (shown no worse than the
margin), `fail` (shown worse than the margin), `inconclusive` (not enough evidence either way)
and `no_data` (an arm has no units). The gate spends `1 - confidence` over every comparison of
every canary and expansion tier (Bonferroni), so the whole rollout's false-rollback rate stays
below it even though each tier starts a new sequence.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import cached_property
from typing import Any, Literal

import numpy as np
from scipy import optimize

Metric = Literal["error_rate", "session_error_rate", "p95_latency", "cost_per_session"]
METRICS: tuple[str, ...] = ("error_rate", "session_error_rate", "p95_latency", "cost_per_session")
UNITS: dict[str, str] = {"error_rate": "calls", "session_error_rate": "sessions", "p95_latency": "calls",
                         "cost_per_session": "sessions"}
CompareResult = Literal["pass", "fail", "inconclusive", "no_data"]
QUANTILE = 0.95


# -- evidence ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Moments:
    """A per-unit value's count, sum and sum of squares: enough for its mean and variance."""

    n: float
    total: float
    total_sq: float
    yes_no: bool = False  # yes/no units (an errored call or session), whose spread is smoothed
    unit_variance: float | None = None  # the spread per unit when units come in clusters (calls in sessions)

    @classmethod
    def of(cls, values: Sequence[float]) -> Moments:
        """Return the moments of some values."""
        array = np.asarray(values, dtype=float)
        return cls(float(array.size), float(array.sum()), float(np.square(array).sum()))

    @classmethod
    def binary(cls, hits: float, n: float) -> Moments:
        """Return the moments of n yes/no units of which `hits` were yes (errors, errored sessions)."""
        return cls(float(n), float(hits), float(hits), True)

    @classmethod
    def clustered(cls, hits: float, n: float, *, clusters: float, hits_sq: float, n_sq: float, cross: float
                  ) -> Moments:
        """Return a rate over units that come in clusters, with the ratio estimator's cluster-robust spread.

        hits_sq, n_sq and cross are the sums over clusters of hits², units² and hits × units. A session
        whose calls fail together counts as one burst, not as many independent failures; the spread is
        never taken below the independent (binomial) one.
        """
        base = cls.binary(hits, n)
        if clusters < 2 or n <= 0:
            return base
        rate = hits / n
        spread = max(0.0, hits_sq - 2 * rate * cross + rate ** 2 * n_sq) / (clusters - 1)
        return replace(base, unit_variance=max(spread * clusters / n, base.variance))

    @property
    def mean(self) -> float:
        return self.total / self.n if self.n > 0 else math.nan

    @property
    def variance(self) -> float:
        """Return the sample variance; a yes/no rate is smoothed so that zero hits still has spread."""
        if self.n < 2:
            return math.nan
        if self.unit_variance is not None:
            return self.unit_variance
        if self.yes_no:
            p = (self.total + 0.5) / (self.n + 1.0)
            return p * (1 - p)
        return max(0.0, (self.total_sq - self.total ** 2 / self.n) / (self.n - 1))


@dataclass(frozen=True)
class Distribution:
    """Cumulative counts at increasing points: every sample (exact) or a histogram's bucket bounds."""

    points: tuple[float, ...]
    counts: tuple[float, ...]  # units at or below each point
    exact: bool

    @classmethod
    def of_samples(cls, values: Sequence[float]) -> Distribution:
        """Return the exact distribution of some samples."""
        points, counts = np.unique(np.asarray(values, dtype=float), return_counts=True)
        return cls(tuple(points.tolist()), tuple(np.cumsum(counts).astype(float).tolist()), True)

    @classmethod
    def of_histogram(cls, buckets: Sequence[tuple[float, float]]) -> Distribution:
        """Return a histogram's distribution from (le, cumulative count) pairs, +Inf last."""
        ordered = sorted(buckets)
        counts = np.maximum.accumulate(np.asarray([c for _, c in ordered] or [0.0], dtype=float))[:len(ordered)]
        return cls(tuple(le for le, _ in ordered), tuple(float(c) for c in counts), False)

    @property
    def n(self) -> float:
        return self.counts[-1] if self.counts else 0.0

    @cached_property
    def _counts(self) -> np.ndarray:
        return np.asarray(self.counts, dtype=float)

    def quantile(self, q: float) -> float:
        """Return the q-quantile: nearest rank for samples, linear within the bucket for a histogram."""
        if not self.points:
            return math.nan
        rank = q * self.n
        index = int(np.searchsorted(self._counts, rank, side="left"))
        index = min(index, len(self.points) - 1)
        if self.exact:
            return self.points[index]
        upper = self.points[index]
        lower = self.points[index - 1] if index > 0 else 0.0
        below = self.counts[index - 1] if index > 0 else 0.0
        if not math.isfinite(upper):
            return lower
        inside = self.counts[index] - below
        return lower + (upper - lower) * ((rank - below) / inside if inside > 0 else 1.0)

    def bracket(self, q: float, slack: float) -> tuple[float, float]:
        """Return points below and above the q-quantile when the empirical CDF is within `slack` of q."""
        counts = self._counts
        low_index = int(np.searchsorted(counts, self.n * (q - slack), side="left")) - 1
        high_index = int(np.searchsorted(counts, self.n * (q + slack), side="right"))
        low = self.points[low_index] if low_index >= 0 else 0.0
        high = self.points[high_index] if high_index < len(self.points) else math.inf
        return low, high


@dataclass(frozen=True)
class ArmSample:
    """One arm's evidence since its tier began; None where the source cannot tell."""

    calls: Moments | None = None  # errored calls, as yes/no units
    sessions: Moments | None = None  # errored sessions, as yes/no units
    cost: Moments | None = None  # dollars per session
    latency: Distribution | None = None  # seconds per call


@dataclass(frozen=True)
class ArmEvidence:
    """Both arms over the same time and source; `notes` say why a metric cannot be compared."""

    candidate: ArmSample
    stable: ArmSample
    notes: tuple[tuple[str, str], ...] = ()

    def note(self, metric: str) -> str | None:
        """Return why this source cannot compare `metric`, if it cannot."""
        return dict(self.notes).get(metric)


# -- the boundary -----------------------------------------------------------------------------


def boundary(n: float, *, alpha: float, planned: float) -> float:
    """Return the confidence sequence's half-width in standard errors after n units."""
    if n <= 0 or not 0 < alpha < 1:
        return math.inf
    log_alpha = math.log(alpha)
    rho_sq = (-2 * log_alpha + math.log(1 - 2 * log_alpha)) / max(planned, 1.0)
    x = n * rho_sq
    return math.sqrt((1 + 1 / x) * math.log((x + 1) / alpha ** 2))


def more_units_needed(distance: float, half_width: float, *, n: float, alpha: float, planned: float
                      ) -> float | None:
    """Return roughly how many more units make the half-width shrink to `distance`, if it stays put."""
    if n <= 0 or distance <= 0 or not math.isfinite(half_width) or half_width <= distance:
        return None if distance <= 0 or not math.isfinite(half_width) else 0.0
    k_now = boundary(n, alpha=alpha, planned=planned)

    def gap(scale: float) -> float:
        return half_width * boundary(n * scale, alpha=alpha, planned=planned) / k_now / math.sqrt(scale) - distance

    if gap(1e8) > 0:
        return None
    return n * (optimize.brentq(gap, 1.0, 1e8, xtol=1e-3, rtol=1e-4) - 1)


# -- comparisons -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Comparison:
    """One comparison's verdict: the relative increase's estimate, interval, and both arms' sizes."""

    metric: str
    result: CompareResult
    margin: float
    estimate: float | None = None  # candidate / stable - 1
    lower: float | None = None
    upper: float | None = None
    candidate: float | None = None  # each arm's value of the metric
    stable: float | None = None
    candidate_n: float = 0.0
    stable_n: float = 0.0
    unit: str = "calls"
    needed: float | None = None  # more candidate units a verdict likely needs, when inconclusive
    detail: str = ""  # replaces the usual line: why the source cannot compare at all
    note: str = ""  # added to the usual line

    def as_dict(self) -> dict[str, Any]:
        """Return the comparison as the gate report shows it (infinite bounds as None)."""
        def finite(value: float | None) -> float | None:
            return value if value is not None and math.isfinite(value) else None

        return {"metric": self.metric, "result": self.result, "margin": self.margin,
                "estimate": finite(self.estimate), "lower": finite(self.lower), "upper": finite(self.upper),
                "candidate": finite(self.candidate), "stable": finite(self.stable),
                "candidate_n": self.candidate_n, "stable_n": self.stable_n, "unit": self.unit,
                "needed": finite(self.needed)}


def _verdict(lower: float, upper: float, margin: float) -> CompareResult:
    if lower > margin:
        return "fail"
    if upper <= margin:
        return "pass"
    return "inconclusive"


def compare_means(candidate: Moments, stable: Moments, *, metric: str, margin: float, alpha: float,
                  planned: float) -> Comparison:
    """Compare two arms' means: is the candidate at most `margin` (relative) above stable?"""
    unit = UNITS.get(metric, "units")
    base = Comparison(metric, "no_data", margin, candidate_n=candidate.n, stable_n=stable.n, unit=unit)
    if candidate.n < 2 or stable.n < 2:
        return base
    mc, ms = candidate.mean, stable.mean
    vc, vs = candidate.variance / candidate.n, stable.variance / stable.n
    k = boundary(candidate.n, alpha=alpha, planned=planned)
    limit = 1 + margin
    contrast, spread = mc - limit * ms, math.sqrt(vc + limit ** 2 * vs)
    result = _verdict(contrast - k * spread, contrast + k * spread, 0.0)
    lower, upper = fieller(mc, ms, var_c=vc, var_s=vs, k=k)
    estimate = mc / ms - 1 if ms > 0 else (0.0 if mc == 0 else math.inf)
    needed = None
    if result == "inconclusive":
        needed = more_units_needed(abs(contrast), k * spread, n=candidate.n, alpha=alpha, planned=planned)
    return Comparison(metric, result, margin, estimate, lower - 1, upper - 1, mc, ms, candidate.n, stable.n,
                      unit, needed)


def fieller(mean_c: float, mean_s: float, *, var_c: float, var_s: float, k: float) -> tuple[float, float]:
    """Return the interval of mean_c / mean_s: every ratio r whose contrast mean_c - r mean_s is within k SE."""
    a = mean_s ** 2 - k ** 2 * var_s
    if a <= 0:  # stable is not told apart from zero: the ratio is unbounded above
        low = 0.0 if mean_c - k * math.sqrt(var_c) <= 0 else mean_c / (mean_s + k * math.sqrt(var_s))
        return low, math.inf
    b = -2 * mean_c * mean_s
    c = mean_c ** 2 - k ** 2 * var_c
    root = math.sqrt(max(b * b - 4 * a * c, 0.0))
    return max(0.0, (-b - root) / (2 * a)), (-b + root) / (2 * a)


def compare_quantiles(candidate: Distribution, stable: Distribution, *, metric: str = "p95_latency",
                      margin: float, alpha: float, planned: float, q: float = QUANTILE) -> Comparison:
    """Compare two arms' q-quantiles: is the candidate's at most `margin` (relative) above stable's?"""
    base = Comparison(metric, "no_data", margin, candidate_n=candidate.n, stable_n=stable.n, unit="calls")
    if candidate.n < 1 or stable.n < 1:
        return base
    spread = math.sqrt(q * (1 - q))
    slack_c = boundary(candidate.n, alpha=alpha / 2, planned=planned) * spread / math.sqrt(candidate.n)
    slack_s = boundary(stable.n, alpha=alpha / 2, planned=planned * stable.n / candidate.n) * spread \
        / math.sqrt(stable.n)
    low_c, high_c = candidate.bracket(q, slack_c)
    low_s, high_s = stable.bracket(q, slack_s)
    point_c, point_s = candidate.quantile(q), stable.quantile(q)
    lower = low_c / high_s if high_s > 0 else 0.0
    upper = high_c / low_s if low_s > 0 else math.inf
    result = _verdict(lower, upper, 1 + margin)
    estimate = point_c / point_s - 1 if point_s > 0 else math.inf
    needed, note = None, ""
    if result == "inconclusive" and not _can_pass(candidate, stable, q=q, margin=margin):
        note = "the histogram's buckets are too coarse for this margin: it can fail but never pass"
    elif result == "inconclusive" and lower > 0 and math.isfinite(upper) and point_c > 0 and point_s > 0:
        ratio = math.log(point_c / point_s)
        half = max(math.log(upper) - ratio, ratio - math.log(lower))
        needed = more_units_needed(abs(ratio - math.log(1 + margin)), half, n=candidate.n, alpha=alpha / 2,
                                   planned=planned)
    return Comparison(metric, result, margin, estimate, lower - 1, upper - 1, point_c, point_s, candidate.n,
                      stable.n, "calls", needed, note=note)


def _can_pass(candidate: Distribution, stable: Distribution, *, q: float, margin: float) -> bool:
    """Return whether endless evidence could show the candidate within the margin at these buckets."""
    if candidate.exact and stable.exact:
        return True
    high = candidate.bracket(q, 0.0)[1]
    low = stable.bracket(q, 0.0)[0]
    return low > 0 and high / low <= 1 + margin


def compare_metric(metric: str, evidence: ArmEvidence, *, margin: float, alpha: float, planned_sessions: float,
                   calls_per_session: float = 10.0) -> Comparison:
    """Compare one metric of the two arms, or say why this source cannot."""
    note = evidence.note(metric)
    if note:
        return Comparison(metric, "no_data", margin, unit=UNITS.get(metric, "units"), detail=note)
    planned = planned_sessions * (calls_per_session if UNITS.get(metric) == "calls" else 1.0)
    c, s = evidence.candidate, evidence.stable
    if metric == "p95_latency":
        if c.latency is None or s.latency is None:
            return Comparison(metric, "no_data", margin, unit="calls")
        return compare_quantiles(c.latency, s.latency, margin=margin, alpha=alpha, planned=planned)
    field = {"error_rate": "calls", "session_error_rate": "sessions", "cost_per_session": "cost"}[metric]
    mine, theirs = getattr(c, field), getattr(s, field)
    if mine is None or theirs is None:
        return Comparison(metric, "no_data", margin, unit=UNITS[metric])
    return compare_means(mine, theirs, metric=metric, margin=margin, alpha=alpha, planned=planned)


def alpha_per_comparison(confidence: float, *, comparisons: int, tiers: int) -> float:
    """Split the rollout's error budget over every comparison of every gated tier (Bonferroni)."""
    return (1 - confidence) / max(1, comparisons) / max(1, tiers)


def describe(comparison: Comparison) -> str:
    """Return one line a person can read: estimate, interval, margin and both arms' sizes."""
    if comparison.detail:
        return comparison.detail
    if comparison.result == "no_data" or comparison.estimate is None:
        return f"no data: candidate {comparison.candidate_n:,.0f} and stable {comparison.stable_n:,.0f} " \
               f"{comparison.unit}"
    text = (f"{_pct(comparison.estimate)} [{_pct(comparison.lower)}, {_pct(comparison.upper)}] vs margin "
            f"{_pct(comparison.margin)}; candidate {comparison.candidate_n:,.0f}, stable "
            f"{comparison.stable_n:,.0f} {comparison.unit}")
    if comparison.note:
        return f"{text}; {comparison.note}"
    if comparison.result == "inconclusive":
        more = comparison.needed
        text += f"; needs ~{more:,.0f} more candidate {comparison.unit}" if more else "; needs more traffic"
    return text


def _pct(value: float | None) -> str:
    if value is None or math.isnan(value):
        return "?"
    if math.isinf(value):
        return "+inf" if value > 0 else "-inf"
    return f"{value * 100:+.0f}%"
