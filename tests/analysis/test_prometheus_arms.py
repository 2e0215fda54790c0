"""`gate.compare` from a real Prometheus: both arms in three batched range queries; windows cut at the tier."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from gatekeeper.prometheus_source import PrometheusSource, prometheus_window
from gatekeeper.tier_signals import SignalRequest
from tests.support.http import LoopbackHTTPServer, RecordedRequest
from tests.support.services import PrometheusServer, require_binary

AGENTS = ["alpha", "beta", "gamma"]


class ArmsExporter:
    """Every scrape: the candidate 10 calls (1 error, all <= 0.2 s), stable 100 calls (1 error, all <= 0.1 s)."""

    def __init__(self) -> None:
        self.scrapes = 0
        self._lock = threading.Lock()

    def respond(self, request: RecordedRequest) -> tuple[int, str, bytes]:
        with self._lock:
            self.scrapes += 1
            n = self.scrapes
        lines = []
        for agent in AGENTS:
            for arm, version, calls, low in (("candidate", "v2", 10, 0), ("stable", "v1", 100, 100)):
                labels = f'agent="{agent}",version="{version}",arm="{arm}"'
                lines += [f"gatekeeper_sessions_total{{{labels}}} {n}",
                          f'gatekeeper_tool_calls_total{{{labels},tool_class="read_only",status="ok"}} '
                          f"{(calls - 1) * n}",
                          f'gatekeeper_tool_calls_total{{{labels},tool_class="read_only",status="error"}} {n}',
                          f"gatekeeper_spend_dollars_total{{{labels}}} {0.1 * n:.1f}",
                          f'gatekeeper_tool_call_latency_seconds_bucket{{{labels},le="0.1"}} {low * n}',
                          f'gatekeeper_tool_call_latency_seconds_bucket{{{labels},le="0.2"}} {calls * n}',
                          f'gatekeeper_tool_call_latency_seconds_bucket{{{labels},le="+Inf"}} {calls * n}']
        return 200, "text/plain; version=0.0.4", ("\n".join(lines) + "\n").encode()


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[PrometheusServer, float]]:
    require_binary("prometheus")
    tmp_path = tmp_path_factory.mktemp("prometheus-arms")
    with LoopbackHTTPServer(ArmsExporter().respond) as target, \
            PrometheusServer(tmp_path, scrape_targets=[target.target], scrape_interval="1s") as server:
        began = time.time()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            found = server.query('count_over_time(gatekeeper_sessions_total{agent="gamma",arm="stable"}[30s])')
            if found and float(found[0]["value"][1]) >= 12:
                break
            time.sleep(0.5)
        else:
            pytest.fail("Prometheus never scraped 12 samples of the exporter")
        yield server, began


def test_both_arms_come_from_three_range_queries_whatever_the_number_of_agents(
        prometheus: tuple[PrometheusServer, float]) -> None:
    server, began = prometheus
    source = PrometheusSource(server.url, timeout_s=5, arm_step_s=2.0)
    now = time.time()
    requests = [SignalRequest(agent, "v2", i, 30.0, tier_started_at=began, compare=True)
                for i, agent in enumerate(AGENTS)]
    batch = source.tier_signals(requests, now=now)
    assert batch.status.available, batch.status
    assert batch.queries == 6 + 3  # the six window metrics, and three range queries for every comparison
    for request in requests:
        found = batch.for_request(request)
        assert found is not None and found.arms is not None
        candidate, stable = found.arms.candidate, found.arms.stable
        assert candidate.calls is not None and stable.calls is not None
        assert candidate.calls.n > 50 and stable.calls.n == pytest.approx(10 * candidate.calls.n, rel=0.05)
        assert candidate.calls.mean == pytest.approx(0.1, abs=0.02) and stable.calls.mean == pytest.approx(0.01,
                                                                                                         abs=0.003)
        assert candidate.latency is not None and stable.latency is not None and not candidate.latency.exact
        assert candidate.latency.quantile(0.95) == pytest.approx(0.195, abs=0.002)  # inside the 0.1-0.2 bucket
        assert stable.latency.quantile(0.95) == pytest.approx(0.095, abs=0.002)
        assert found.arms.note("cost_per_session") and found.arms.note("session_error_rate")
        assert found.arms.note("error_rate") is None
    fewer = source.tier_signals(requests[:1], now=now)
    assert fewer.queries == 6 + 3


def test_the_window_is_cut_at_the_tier_start(prometheus: tuple[PrometheusServer, float]) -> None:
    server, _ = prometheus
    source = PrometheusSource(server.url, timeout_s=5)
    now = time.time()
    whole = SignalRequest("alpha", "v2", 1, 30.0)
    young = SignalRequest("beta", "v2", 2, 30.0, tier_started_at=now - 7)  # cut to 6 s (steps of 3 s)
    newborn = SignalRequest("gamma", "v2", 3, 30.0, tier_started_at=now - 1)  # younger than one step
    assert [prometheus_window(r, now=now) for r in (whole, young, newborn)] == [30.0, 6.0, 0.0]
    batch = source.tier_signals([whole, young, newborn], now=now)
    full, cut, none = (batch.for_request(r) for r in (whole, young, newborn))
    assert full is not None and cut is not None and none is not None
    assert full.tool_calls is not None and cut.tool_calls is not None
    assert cut.tool_calls < full.tool_calls / 2
    assert none.sessions is None and none.tool_calls is None  # nothing from before the tier counts
    assert batch.queries == 6 + 6  # one batch per distinct cut window, never one per agent
