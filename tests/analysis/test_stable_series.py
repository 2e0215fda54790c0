"""The stable arm beside the candidate on the agent page's charts: buckets from the database, series, the page."""

from __future__ import annotations

import re
import time

import pytest
from flask.testing import FlaskClient

from gatekeeper.gate_cycle import evaluate_all
from gatekeeper.metric_sources import BuiltinSource
from gatekeeper.services import Services
from gatekeeper.store import arm_series
from gatekeeper.store.models import Rollout
from gatekeeper.web import charts, history
from tests.support.dashboard import signed_in
from tests.support.gates import add_session, place

START = 1_700_000_040.0  # a multiple of 60: minute buckets begin with the rollout


def seed_both_arms(services: Services, start: float) -> Rollout:
    """Place bot at canary 1% at `start`: stable traffic in two minutes, and traffic that must never count."""
    rollout = place(services, now=start)
    add_session(services, rollout, arm="stable", started_at=start + 5, spend_micros=200_000,
                calls=[("search_kb", "allow", "ok", 40.0), ("search_kb", "allow", "error", 120.7)])
    add_session(services, rollout, arm="stable", started_at=start + 65, spend_micros=100_000,
                calls=[("search_kb", "allow", "ok", 10.0)] * 3)
    add_session(services, rollout, arm="stable", started_at=start + 10, environment="twin",
                calls=[("search_kb", "allow", "error", 700.0)])
    mirrored = add_session(services, rollout, arm="stable", started_at=start + 20, spend_micros=5_000_000,
                           calls=[("search_kb", "allow", "error", 900.0)])
    add_session(services, rollout, arm="stable", started_at=start + 20, calls=[("search_kb", "shadow", "error", 9.0)],
                mirror_of=mirrored)  # a stable-labelled mirror never counts either
    add_session(services, rollout, arm="candidate", started_at=start + 30, calls=[("search_kb", "allow", "error", 5.0)])
    return rollout


def buckets_of(services: Services, rollout: Rollout, start: float) -> dict[int, tuple[int, int, int, int, list]]:
    with services.db.reading() as db:
        found = arm_series.arm_buckets(rollout.id or 0, arm="stable", span=(start, start + 180), width_s=60, db=db)
    return {i - int(start // 60): (b.calls, b.errors, b.sessions, b.spend_micros, sorted(b.latencies_ms))
            for i, b in found.items()}


def expected(services: Services) -> dict[int, tuple[int, int, int, int, list]]:
    # Postgres rounds 120.7 ms to 121 where SQLite truncates to 120: both are the 1 ms bin of that call.
    slow = 121 if services.db.engine.dialect.name == "postgresql" else 120
    return {0: (3, 2, 2, 5_200_000, [(40, 1), (slow, 1), (900, 1)]), 1: (3, 0, 1, 100_000, [(10, 3)])}


def test_stable_buckets_count_live_stable_traffic_only(services: Services) -> None:
    rollout = seed_both_arms(services, START)
    assert buckets_of(services, rollout, START) == expected(services)


def test_on_postgres_stable_buckets_are_the_same(postgres_services: Services) -> None:
    rollout = seed_both_arms(postgres_services, START)
    assert buckets_of(postgres_services, rollout, START) == expected(postgres_services)


@pytest.mark.parametrize(("span_s", "width_s", "text"), [
    (120, 60, "1 min"), (150 * 60, 300, "5 min"), (6 * 3600, 600, "10 min"), (3 * 86400, 7200, "2 h"),
    (400 * 86400, 604800, "7 d"),
])
def test_buckets_are_round_at_least_a_minute_and_few(span_s: float, width_s: float, text: str) -> None:
    assert history.bucket_width((START, START + span_s)) == width_s
    assert history.step_text(width_s) == text


def test_stable_series_per_bucket_with_gaps_for_no_traffic() -> None:
    buckets = {int(START // 60): arm_series.Bucket(calls=4, errors=1, sessions=2, spend_micros=500_000,
                                                   latencies_ms=[(30, 18), (200, 1), (900, 1)]),
               int(START // 60) + 2: arm_series.Bucket(calls=2, latencies_ms=[(50, 2)])}
    series = history.stable_series(buckets, span=(START, START + 150), width_s=60)
    ends = [START + 60, START + 120, START + 150]  # each bucket at its end; the last cut at the span's end
    assert series["error_rate"] == list(zip(ends, [0.25, None, 0.0], strict=True))
    assert series["p95_latency_s"] == list(zip(ends, [0.2, None, 0.05], strict=True))  # rank 19 of 20
    assert series["cost_per_session"] == list(zip(ends, [0.25, None, None], strict=True))


def test_a_comparison_is_stated_beside_its_chart_only() -> None:
    report = {"checks": [
        {"name": "error_rate vs stable", "result": "inconclusive",
         "compare": {"metric": "error_rate", "estimate": 1.0, "lower": -0.2, "upper": 3.1, "margin": 0.5,
                     "confidence": 0.95, "candidate_n": 300, "stable_n": 10_000, "unit": "calls"}},
        {"name": "p95_latency vs stable", "result": "no_data", "compare": {"metric": "p95_latency", "estimate": None}},
        {"name": "sessions", "result": "pass", "value": 50}]}
    assert history.comparisons(report) == {
        "error_rate": "Candidate vs stable: +100%, 95% interval [-20%, +310%], margin ≤ +50% (inconclusive)"}
    assert history.comparisons({}) == {}


def test_the_axis_tops_stable_too_and_stable_is_its_own_dotted_series() -> None:
    chart = charts.line_chart("error_rate", [(START, 0.01), (START + 60, 0.02)], title="Error rate",
                              span=(START, START + 60), baseline=[(START + 30, 0.3), (START + 60, None)],
                              baseline_label="stable, per 1 min", comparison="Candidate vs stable: +5%")
    assert chart.y_ticks[-1].label == "0.5" and chart.baseline_latest == "0.3"
    assert chart.baseline_path.startswith("M") and " L" not in chart.baseline_path
    assert [p.label.split()[0] for p in chart.baseline_points] == ["stable"]
    bare = charts.line_chart("error_rate", [], title="Error rate", span=(START, START + 60))
    assert bare.empty and bare.baseline_label == "" and bare.baseline_path == ""


def chart_of(page: str, key: str) -> str:
    found = page[page.index(f'data-testid="chart-{key}"'):]
    return found[:found.index("</figure>")]


def test_the_agent_page_draws_stable_beside_the_candidate_with_the_interval(
        client: FlaskClient, services: Services, users: dict[str, str]) -> None:
    start = time.time() // 60 * 60 - 600  # on a minute, as START: stable's two minutes stay two buckets
    rollout = seed_both_arms(services, start)
    for offset in (75, 80, 85):  # inside the 30 s window of the evaluation at start + 100
        add_session(services, rollout, arm="candidate", started_at=start + offset,
                    calls=[("search_kb", "allow", "ok", 30.0)] * 4)
    evaluate_all(services, BuiltinSource(services.db), now=start + 100)
    signed_in(client, "alice")
    page = client.get("/agents/bot").get_data(as_text=True)
    error_rate = chart_of(page, "error_rate")
    assert 'class="series baseline"' in error_rate and 'class="point baseline"' in error_rate
    assert re.search(r'<path class="series" d="M[^"]+"', error_rate)  # the candidate's gate values, drawn apart
    assert "latest 0.00% · stable 0.00%" in error_rate
    assert "stable, per 1 min (dotted)" in error_rate and "candidate (solid: each gate evaluation)" in error_rate
    assert "candidate solid, stable, per 1 min dotted" in error_rate  # the image's text alternative says so too
    stated = re.search(r'data-testid="chart-compare-error_rate">([^<]*)<', error_rate)
    assert stated is not None and "Candidate vs stable:" in stated.group(1) and "95% interval [" in stated.group(1)
    assert 'data-testid="chart-compare-cost_per_session"' not in page  # not compared by this policy
    assert 'class="series baseline"' not in chart_of(page, "traffic_percent")
