"""Overruns (SPEC §2): recorded on the decision, counted, and gated by `gate.max_overrun_rate` on both sources."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
import requests
from flask import Flask

from gatekeeper import gate_cycle
from gatekeeper.core.gates import Counters, SourceStatus, Where
from gatekeeper.core.tier_gate import TierSignals, evaluate_tier_gate
from gatekeeper.metric_sources import BuiltinSource
from gatekeeper.policy_files import parse_policy
from gatekeeper.prometheus_source import PrometheusSource
from gatekeeper.tier_signals import SignalRequest
from tests.support.app import svc
from tests.support.runtime import POLICY, Runtime, counts
from tests.support.scrape import parse
from tests.support.servers import Server
from tests.support.services import PrometheusServer, require_binary

GATE = parse_policy(POLICY).canary.gate  # max_overrun_rate: the default 0.05


@pytest.mark.parametrize(("calls", "overruns", "expected"), [
    (100, 5, ("pass", 0.05)),
    (100, 6, ("fail", 0.06)),
    (100, 0, ("pass", 0.0)),
    (100, None, ("pass", 0.0)),  # calls but no overrun series: none overran
    (0, 0, ("no_data", None)),  # no outcomes: nothing is known, never a pass
    (None, None, ("no_data", None)),
])
def test_the_overrun_check(calls: float | None, overruns: float | None, expected: tuple[str, float | None]) -> None:
    signals = TierSignals(sessions=200, tool_calls=calls, errors=0, p95_latency_s=0.1, spend_dollars=1.0,
                          overruns=overruns)
    report = evaluate_tier_gate(GATE, signals, where=Where("canary", 0, "canary 1%", 1.0), tier_started_at=0,
                                counters=Counters(), source=SourceStatus("test"), now=10_000)
    check = next(c for c in report.checks if c.name == "overrun_rate")
    assert (check.result, check.value, check.threshold, check.comparison) == (*expected, 0.05, "<=")


def test_an_overrun_is_recorded_counted_and_charged_in_full(runtime: Runtime, app: Flask) -> None:
    runtime.setup("canary", 0)
    session = runtime.session(candidate=True)["session_id"]  # canary caps: 20 calls, $0.50
    over = runtime.decide(session, "search_kb", 0.40)["decision_id"]
    answer = runtime.report(over, actual_cost=0.90)
    assert (answer["actual_cost"], answer["overrun"]) == (0.90, 0.50)
    assert runtime.report(over, actual_cost=0.90) == answer  # an idempotent repeat counts nothing again
    assert counts(app, "SELECT overrun_micros, actual_cost_micros FROM decisions WHERE id = :id", id=over) == (
        500_000, 900_000)
    assert counts(app, "SELECT spend_micros FROM sessions WHERE id = :id", id=session)[0] == 900_000  # past the cap
    refused = runtime.decide(session, "search_kb", 0.0)  # past the cap even a free call is refused
    assert (refused["reason"], refused["remaining"]) == ("cap_spend", {"tool_calls": 19, "spend": 0.0})
    other = runtime.session(candidate=True)["session_id"]
    for cost, actual in ((0.10, 0.05), (0.10, 0.10), (0.10, None)):
        decision = runtime.decide(other, "search_kb", cost)["decision_id"]
        assert runtime.report(decision, actual_cost=actual)["overrun"] == 0.0
        assert counts(app, "SELECT overrun_micros, outcome_status FROM decisions WHERE id = :id", id=decision) == (
            None, "ok")
    samples = parse(runtime.client.get("/metrics").get_data(as_text=True))
    labels = (("agent", "bot"), ("arm", "candidate"), ("version", "v2"))
    assert samples[("gatekeeper_cost_overruns_total", labels)] == 1.0


def test_the_builtin_source_gates_on_the_overrun_rate(runtime: Runtime, app: Flask) -> None:
    runtime.setup("canary", 0)
    for index in range(10):
        session = runtime.session(candidate=True)["session_id"]
        decision = runtime.decide(session, "search_kb", 0.01)["decision_id"]
        runtime.report(decision, actual_cost=0.03 if index < 2 else 0.01, latency_ms=50)
    outcomes = gate_cycle.evaluate_all(svc(app), BuiltinSource(svc(app).db), now=time.time() + 60)
    checks = {c["name"]: c for c in outcomes[0].report["checks"]}
    assert (checks["overrun_rate"]["value"], checks["overrun_rate"]["result"]) == (0.2, "fail")
    assert checks["error_rate"]["result"] == "pass"


def _wait_for(prometheus: PrometheusServer, expr: str, value: float) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        found = prometheus.query(expr)
        if found and float(found[0]["value"][1]) == value:
            return
        time.sleep(0.25)
    raise AssertionError(f"Prometheus never saw {expr} = {value}")


@pytest.mark.slow  # ~20 s: Prometheus takes ~5 s to find its target, then two scrapes of real traffic
def test_the_prometheus_source_gates_on_the_overrun_rate(runtime: Runtime, db_url: str, policy_dir: Path,
                                                         tmp_path: Path, served: Callable[..., Server]) -> None:
    require_binary("prometheus")
    runtime.setup("canary", 0)
    server = served(database_url=db_url, policy_dir=policy_dir, workers=2)
    http = requests.Session()
    http.headers.update(runtime.agent)
    session = runtime.session(candidate=True)["session_id"]

    def calls(count: int, overruns: int) -> None:
        for index in range(count):
            decision = http.post(f"{server.url}/v1/decisions", json={"session_id": session, "tool": "search_kb",
                                                                     "cost": 0.001}, timeout=10).json()
            http.post(f"{server.url}/v1/decisions/{decision['decision_id']}/outcome", timeout=10,
                      json={"status": "ok", "actual_cost": 0.002 if index < overruns else 0.001})

    calls_expr = 'sum(gatekeeper_tool_calls_total{agent="bot",arm="candidate"})'
    with PrometheusServer(tmp_path, scrape_targets=[server.url.removeprefix("http://")],
                          scrape_interval="1s") as prometheus:
        calls(4, 1)  # the counters' first samples: increase() counts from here
        _wait_for(prometheus, calls_expr, 4)
        calls(10, 4)
        _wait_for(prometheus, calls_expr, 14)
        source = PrometheusSource(prometheus.url, timeout_s=5)
        batch = source.tier_signals([SignalRequest("bot", "v2", runtime.rollout_id, 60.0)], now=time.time())
    signals = batch.for_request(SignalRequest("bot", "v2", runtime.rollout_id, 60.0))
    assert batch.queries == 6 and signals is not None  # the overrun series is one more batched query
    assert (signals.overruns or 0) / (signals.tool_calls or 1) == pytest.approx(0.4, abs=0.05)
    report = evaluate_tier_gate(GATE, signals, where=Where("canary", 0, "canary 1%", 1.0), tier_started_at=0,
                                counters=Counters(), source=batch.status, now=time.time())
    assert next(c for c in report.checks if c.name == "overrun_rate").result == "fail"
