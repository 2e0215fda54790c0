"""The statistics of `gate.compare`, table-tested against numpy, scipy and reference values."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from gatekeeper.core.comparison import (
    ArmEvidence,
    ArmSample,
    Distribution,
    Moments,
    alpha_per_comparison,
    boundary,
    compare_means,
    compare_metric,
    compare_quantiles,
    describe,
    fieller,
    more_units_needed,
)


@pytest.mark.parametrize("values", [[1.0, 2.0, 3.0, 4.0], [0.5, 0.5, 7.25], list(np.linspace(0, 1, 101))])
def test_moments_agree_with_scipy_describe(values: list[float]) -> None:
    described = stats.describe(values)
    moments = Moments.of(values)
    assert moments.n == described.nobs
    assert moments.mean == pytest.approx(described.mean)
    assert moments.variance == pytest.approx(described.variance)


@pytest.mark.parametrize(("errors", "calls"), [
    ([0, 0, 1, 0, 2, 0, 0, 1], [10, 8, 12, 9, 11, 10, 7, 13]),      # scattered errors
    ([0, 0, 0, 0, 9, 0, 0, 0], [10, 8, 12, 9, 11, 10, 7, 13]),      # one bursty session
])
def test_a_clustered_rate_uses_the_ratio_estimators_delta_method_spread(errors: list[int], calls: list[int]) -> None:
    e, c = np.asarray(errors, dtype=float), np.asarray(calls, dtype=float)
    n, rate = len(e), e.sum() / c.sum()
    cov = np.cov(np.vstack([e, c]))  # ddof 1: var(e), cov(e, c), var(c)
    mean_c = c.mean()
    delta = (cov[0, 0] / mean_c ** 2 - 2 * rate * cov[0, 1] / mean_c ** 2 + rate ** 2 * cov[1, 1] / mean_c ** 2) / n
    found = Moments.clustered(e.sum(), c.sum(), clusters=n, hits_sq=float((e * e).sum()), n_sq=float((c * c).sum()),
                              cross=float((e * c).sum()))
    binomial = Moments.binary(e.sum(), c.sum()).variance
    assert found.mean == pytest.approx(rate)
    assert found.variance / found.n == pytest.approx(max(delta, binomial / c.sum()))
    if max(errors) == 9:
        assert found.variance > 3 * binomial  # a burst in one session is weaker evidence than scattered errors


def test_a_rate_with_no_hits_still_has_spread() -> None:
    assert Moments.binary(0, 1000).variance > 0
    assert Moments.binary(10, 1000).variance == pytest.approx((10.5 / 1001) * (1 - 10.5 / 1001))


@pytest.mark.parametrize("alpha", [0.2, 0.05, 0.01, 0.001])
@pytest.mark.parametrize("n", [10, 100, 10_000])
def test_the_boundary_is_wider_than_a_fixed_sample_interval_and_grows_like_log(alpha: float, n: int) -> None:
    fixed = stats.norm.ppf(1 - alpha / 2)
    assert boundary(n, alpha=alpha, planned=n) > fixed
    assert boundary(100 * n, alpha=alpha, planned=n) < fixed * 2.5  # sqrt(log): it never runs away


@pytest.mark.parametrize(("n", "alpha", "planned", "expected"), [
    # Waudby-Smith et al. 2024, Thm 2.2 with rho^2 = (-2 log a + log(1 - 2 log a)) / planned, in SE units
    (1000, 0.05, 1000, 3.0352),
    (100, 0.05, 1000, 3.8551),
    (1000, 0.01, 1000, 3.5716),
])
def test_the_boundary_matches_the_published_formula(n: float, alpha: float, planned: float, expected: float) -> None:
    rho_sq = (-2 * math.log(alpha) + math.log(1 - 2 * math.log(alpha))) / planned
    sigma = 1.0  # the paper's half-width sigma * sqrt(2(t rho^2 + 1)/(t^2 rho^2) log(sqrt(t rho^2 + 1)/alpha))
    paper = sigma * math.sqrt(2 * (n * rho_sq + 1) / (n ** 2 * rho_sq) * math.log(math.sqrt(n * rho_sq + 1) / alpha))
    assert boundary(n, alpha=alpha, planned=planned) / math.sqrt(n) == pytest.approx(paper)
    assert boundary(n, alpha=alpha, planned=planned) == pytest.approx(expected, abs=1e-3)


def test_looking_every_step_keeps_the_error_rate_where_a_fixed_test_does_not() -> None:
    rng = np.random.default_rng(7)
    paths, steps, alpha = 2000, 1000, 0.05
    sums = np.cumsum(rng.standard_normal((paths, steps)), axis=1)
    n = np.arange(1, steps + 1)
    means = sums / n
    sd = np.sqrt(n)  # SE of the mean is 1/sqrt(n)
    k = np.array([boundary(t, alpha=alpha, planned=100) for t in n])
    sequential = (np.abs(means) * sd > k)[:, 10:].any(axis=1).mean()
    peeking = (np.abs(means) * sd > stats.norm.ppf(1 - alpha / 2))[:, 10:].any(axis=1).mean()
    assert sequential <= alpha
    assert peeking > 4 * alpha


@pytest.mark.parametrize(("mc", "ms", "vc", "vs", "k"), [
    (0.02, 0.01, 1e-6, 1e-8, 3.0), (0.01, 0.01, 4e-6, 1e-8, 2.0), (5.0, 4.0, 0.3, 0.1, 1.96)])
def test_fieller_bounds_solve_the_quadratic(mc: float, ms: float, vc: float, vs: float, k: float) -> None:
    low, high = fieller(mc, ms, var_c=vc, var_s=vs, k=k)
    for r in (low, high):
        assert (mc - r * ms) ** 2 == pytest.approx(k ** 2 * (vc + r ** 2 * vs), rel=1e-6)
    assert low < mc / ms < high


def test_fieller_is_unbounded_when_stable_is_not_told_from_zero() -> None:
    assert fieller(0.01, 0.0001, var_c=1e-6, var_s=1e-6, k=3.0)[1] == math.inf


@pytest.mark.parametrize("values", [[3.0, 1.0, 2.0], list(range(1, 101)), [0.1] * 5 + [9.0]])
@pytest.mark.parametrize("q", [0.5, 0.95])
def test_sample_quantile_is_numpys_inverted_cdf(values: list[float], q: float) -> None:
    expected = np.quantile(values, q, method="inverted_cdf")
    assert Distribution.of_samples(values).quantile(q) == pytest.approx(expected)


def test_an_empty_distribution_has_no_quantile() -> None:
    assert math.isnan(Distribution.of_samples([]).quantile(0.95))
    assert Distribution.of_histogram([]).n == 0


def test_histogram_quantile_matches_prometheus_histogram_quantile() -> None:
    # histogram_quantile(0.95, ...) of buckets le=0.5:10, le=1:10, +Inf:10 is 0.475 (see tests/gates/test_sources)
    assert Distribution.of_histogram([(0.5, 10), (1.0, 10), (math.inf, 10)]).quantile(0.95) == pytest.approx(0.475)
    assert Distribution.of_histogram([(0.1, 50), (0.2, 90), (0.4, 100), (math.inf, 100)]).quantile(0.95) \
        == pytest.approx(0.3)


def test_the_bracket_is_order_statistics_around_the_quantile() -> None:
    values = [float(v) for v in range(1, 1001)]
    low, high = Distribution.of_samples(values).bracket(0.95, 0.01)
    assert (low, high) == (939.0, 961.0)  # ranks below 940 and above 960 are outside 0.95 +- 0.01
    low, high = Distribution.of_histogram([(0.5, 900), (1.0, 990), (math.inf, 1000)]).bracket(0.95, 0.01)
    assert (low, high) == (0.5, 1.0)


BIG = 300_000


@pytest.mark.parametrize(("c_hits", "c_n", "s_hits", "s_n", "margin", "result"), [
    (300, 30_000, 3000, BIG, 0.5, "pass"),          # same rate, plenty of evidence
    (600, 30_000, 3000, BIG, 0.5, "fail"),          # twice the rate
    (6, 300, 3000, BIG, 0.5, "inconclusive"),       # same rate, too little evidence
    (0, 1, 3000, BIG, 0.5, "no_data"),              # one unit is no sample
    (330, 30_000, 3000, BIG, 0.5, "pass"),          # 10% worse, within the margin
])
def test_rate_comparisons(c_hits: int, c_n: int, s_hits: int, s_n: int, margin: float, result: str) -> None:
    found = compare_means(Moments.binary(c_hits, c_n), Moments.binary(s_hits, s_n), metric="error_rate",
                          margin=margin, alpha=0.05 / 12, planned=4000)
    assert found.result == result
    assert (found.candidate_n, found.stable_n) == (c_n, s_n)
    if result != "no_data":
        assert found.lower is not None and found.upper is not None and found.estimate is not None
        assert found.lower <= found.estimate <= found.upper
        assert (found.upper <= margin) == (result == "pass") and (found.lower > margin) == (result == "fail")


def test_an_inconclusive_comparison_says_how_much_more_it_needs() -> None:
    found = compare_means(Moments.binary(6, 300), Moments.binary(3000, BIG), metric="error_rate", margin=0.5,
                          alpha=0.05 / 12, planned=4000)
    assert found.needed is not None and 1_000 < found.needed < 100_000
    assert "more candidate calls" in describe(found)
    assert more_units_needed(0.0, 1.0, n=100, alpha=0.05, planned=100) is None


@pytest.mark.parametrize(("shift", "result"), [(1.0, "pass"), (1.3, "fail")])
def test_quantile_comparisons(shift: float, result: str) -> None:
    rng = np.random.default_rng(3)
    stable = rng.lognormal(-1.0, 0.5, 200_000)
    candidate = rng.lognormal(-1.0, 0.5, 40_000) * shift
    found = compare_quantiles(Distribution.of_samples(candidate.tolist()), Distribution.of_samples(stable.tolist()),
                              margin=0.2, alpha=0.05 / 12, planned=4000)
    assert found.result == result
    assert found.lower is not None and found.upper is not None
    assert found.lower <= (found.estimate or 0) <= found.upper


def test_a_source_that_cannot_tell_says_why() -> None:
    evidence = ArmEvidence(ArmSample(), ArmSample(), notes=(("cost_per_session", "totals only"),))
    found = compare_metric("cost_per_session", evidence, margin=0.3, alpha=0.01, planned_sessions=100)
    assert (found.result, describe(found)) == ("no_data", "totals only")
    assert compare_metric("error_rate", evidence, margin=0.3, alpha=0.01, planned_sessions=100).result == "no_data"


def test_alpha_is_spent_over_every_comparison_and_tier() -> None:
    assert alpha_per_comparison(0.95, comparisons=2, tiers=6) == pytest.approx(0.05 / 12)


def test_coarse_histogram_buckets_can_fail_but_never_pass() -> None:
    # the shipped latency buckets double from one bound to the next: a 20% margin is finer than that
    same = Distribution.of_histogram([(0.25, 90_000), (0.5, 99_000), (1.0, 100_000), (math.inf, 100_000)])
    found = compare_quantiles(same, same, margin=0.2, alpha=0.01, planned=4000)
    assert found.result == "inconclusive" and found.needed is None
    assert "too coarse" in describe(found)
    slower = Distribution.of_histogram([(0.25, 10_000), (0.5, 20_000), (1.0, 80_000), (2.0, 100_000),
                                        (math.inf, 100_000)])
    assert compare_quantiles(slower, same, margin=0.2, alpha=0.01, planned=4000).result == "fail"
