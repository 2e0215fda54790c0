"""Metrics sources: the built-in one on a real SQLite file, Prometheus as the real binary."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from gatekeeper.core.policy import ExtraQuery
from gatekeeper.metric_sources import BuiltinSource
from gatekeeper.prometheus_source import PrometheusSource
from gatekeeper.services import Services
from gatekeeper.tier_signals import SignalRequest, percentile
from tests.support.gates import T0, add_session, place
from tests.support.http import LoopbackHTTPServer, RecordedRequest
from tests.support.services import PrometheusServer, require_binary


def test_percentile_is_nearest_rank() -> None:
    assert percentile([], 0.95) is None
    assert percentile([3.0], 0.95) == 3.0
    assert percentile([float(v) for v in range(1, 101)], 0.95) == 95.0
    assert percentile([1.0, 2.0], 0.5) == 1.0


def test_builtin_source_counts_live_candidate_traffic_in_the_window(services: Services) -> None:
    rollout = place(services)
    ok, err = ("search_kb", "allow", "ok", 100.0), ("search_kb", "allow", "error", 3000.0)
    for calls in ([ok, ok, err], [ok], [ok, ok, ok, ok]):
        add_session(services, rollout, calls=calls, started_at=T0 + 1, spend_micros=100_000)
    add_session(services, rollout, calls=[err] * 9, started_at=T0 - 100)  # before the 30s window
    add_session(services, rollout, arm="stable", calls=[err] * 9, started_at=T0 + 1)
    add_session(services, rollout, environment="twin", calls=[err] * 9, started_at=T0 + 1)
    add_session(services, rollout, calls=[err] * 9, started_at=T0 + 1, mirror_of="s-stable")
    request = SignalRequest("bot", "v2", rollout.id or 0, 30.0, (ExtraQuery("denials", "q", 0.1, None),))
    batch = BuiltinSource(services.db).tier_signals([request], now=T0 + 10)
    signals = batch.for_request(request)
    assert batch.status.available and batch.queries == 3
    assert signals is not None
    assert (signals.sessions, signals.tool_calls, signals.errors) == (3, 8, 1)
    assert signals.p95_latency_s == 3.0 and signals.spend_dollars == pytest.approx(0.3)
    assert signals.extra == {"denials": None} and "GATEKEEPER_PROMETHEUS_URL" in signals.notes["denials"]


def test_builtin_source_answers_many_rollouts_in_chunks(services: Services, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(BuiltinSource, "CHUNK", 2)  # a statement's parameters are bounded: 3 rollouts, 2 chunks
    rollouts = [place(services, f"bot{i}") for i in range(3)]
    for count, rollout in enumerate(rollouts, start=1):
        for _ in range(count):
            add_session(services, rollout, calls=[("search_kb", "allow", "ok", 100.0)], started_at=T0 + 1)
    requests = [SignalRequest(f"bot{i}", "v2", r.id or 0, 30.0, compare=True) for i, r in enumerate(rollouts)]
    batch = BuiltinSource(services.db).tier_signals(requests, now=T0 + 10)
    assert batch.queries == 2 * 3 + 2 * 3  # two chunks of the window's three queries, and of the comparison's
    found = [batch.for_request(r) for r in requests]
    assert [(s.sessions, s.arms is not None) for s in found if s] == [(1, True), (2, True), (3, True)]


class FakeExporter:
    """Serve SPEC §6 counters for some agents; every scrape adds one session, 9 ok calls and 1 error."""

    def __init__(self, agents: list[str]) -> None:
        self.agents = agents
        self.scrapes = 0
        self._lock = threading.Lock()

    def respond(self, request: RecordedRequest) -> tuple[int, str, bytes]:
        with self._lock:
            self.scrapes += 1
            n = self.scrapes
        lines = []
        for agent in self.agents:
            labels = f'agent="{agent}",version="v2",arm="candidate"'
            lines += [f"gatekeeper_sessions_total{{{labels}}} {n}",
                      f'gatekeeper_tool_calls_total{{{labels},tool_class="read_only",status="ok"}} {9 * n}',
                      f'gatekeeper_tool_calls_total{{{labels},tool_class="read_only",status="error"}} {n}',
                      f"gatekeeper_spend_dollars_total{{{labels}}} {0.1 * n:.1f}",
                      *[f'gatekeeper_tool_call_latency_seconds_bucket{{{labels},le="{le}"}} {10 * n}'
                        for le in ("0.5", "1.0", "+Inf")],
                      f'gatekeeper_sessions_total{{agent="{agent}",version="v1",arm="stable"}} {5 * n}']
        return 200, "text/plain; version=0.0.4", ("\n".join(lines) + "\n").encode()


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
    """One Prometheus for this module (the outage test stops it and starts it again)."""
    require_binary("prometheus")
    tmp_path = tmp_path_factory.mktemp("prometheus")
    exporter = FakeExporter(["alpha", "beta", "gamma"])
    with LoopbackHTTPServer(exporter.respond) as target, \
            PrometheusServer(tmp_path, scrape_targets=[target.target], scrape_interval="1s") as server:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            found = server.query('count_over_time(gatekeeper_sessions_total{agent="gamma",arm="candidate"}[30s])')
            if found and float(found[0]["value"][1]) >= 4:
                break
            time.sleep(0.5)
        else:
            pytest.fail("Prometheus never scraped 4 samples of the fake exporter")
        yield server


def test_prometheus_source_batches_one_query_per_metric(prometheus: PrometheusServer) -> None:
    source = PrometheusSource(prometheus.url, timeout_s=5)
    extras = (ExtraQuery("calls", 'sum(rate(gatekeeper_tool_calls_total{agent="{agent}"}[{window}]))', None, 0),
              ExtraQuery("broken", "sum(rate(oops[{window}]", 1, None))
    requests = [SignalRequest(agent, "v2", i, 30.0) for i, agent in enumerate(["alpha", "beta", "gamma"])]
    batch = source.tier_signals([*requests, SignalRequest("delta", "v2", 9, 30.0, extras)], now=time.time())
    assert batch.status.available and batch.status.error is None
    assert batch.queries == 6 + 2  # six metrics for every agent, plus delta's two extra checks
    for request in requests:
        signals = batch.for_request(request)
        assert signals is not None and signals.sessions is not None and signals.sessions > 0
        assert (signals.errors or 0) / (signals.tool_calls or 1) == pytest.approx(0.1, abs=0.02)
        assert signals.p95_latency_s == pytest.approx(0.475)
        assert (signals.spend_dollars or 0) / signals.sessions == pytest.approx(0.1, rel=0.05)
    delta = batch.for_request(SignalRequest("delta", "v2", 9, 30.0))
    assert delta is not None and delta.sessions is None  # no such agent: no data, not zero
    assert delta.extra == {"calls": None} and "broken" in delta.extra_errors
    assert source.breaker.current_state == "closed"  # bad PromQL is not an outage


def test_prometheus_outage_fails_fast_and_recovers(prometheus: PrometheusServer) -> None:
    source = PrometheusSource(prometheus.url, timeout_s=2, fail_max=2, reset_timeout_s=1.0)
    request = SignalRequest("alpha", "v2", 1, 30.0)
    assert source.tier_signals([request], now=time.time()).status.available
    prometheus.stop()
    try:
        first = source.tier_signals([request], now=T0)
        second = source.tier_signals([request], now=T0 + 1)
        started = time.monotonic()
        third = source.tier_signals([request], now=T0 + 2)
        assert time.monotonic() - started < 0.5, "an open breaker must fail fast"
    finally:
        prometheus.start()
    assert [b.status.available for b in (first, second, third)] == [False, False, False]
    assert third.status.unavailable_since == T0 and "circuit open" in (third.status.error or "")
    assert third.for_request(request) is None and third.queries == 2  # the probe, then the breaker refuses
    deadline = time.monotonic() + 15
    while not (batch := source.tier_signals([request], now=time.time())).status.available:
        assert time.monotonic() < deadline, batch.status
        time.sleep(0.5)
    assert batch.status.unavailable_since is None and batch.for_request(request) is not None
