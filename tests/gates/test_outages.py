"""Outages read well and end fast (issue 12 §6): one message per evaluation, configurable breaker,
and evaluation resumes at the first cycle after Prometheus answers again."""

from __future__ import annotations

import json
import time
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from gatekeeper.config import Settings
from gatekeeper.errors import ConfigError
from gatekeeper.gate_cycle import evaluate_all
from gatekeeper.metric_sources import build_source
from gatekeeper.prometheus_source import PROBE, PrometheusSource
from gatekeeper.services import Services
from gatekeeper.store.db import Database
from tests.support.app import POLICIES
from tests.support.gates import T0, place, rollout_of
from tests.support.http import LoopbackHTTPServer, RecordedRequest

OUTAGE = "HTTP Status Code 503"
# The Prometheus window is cut at the tier's start: evaluate once the tier is a whole window (30 s) old.
AFTER_A_WINDOW = T0 + 30


class FlakyPrometheus:
    """A loopback stand-in for Prometheus's query API: healthy numbers for bot v2, or 503 while down."""

    def __init__(self) -> None:
        self.down = False
        self.queries: list[str] = []

    def respond(self, request: RecordedRequest) -> tuple[int, str, bytes]:
        query = parse_qs(urlsplit(request.path).query).get("query", [""])[0]
        self.queries.append(query)
        if self.down:
            return 503, "text/plain", b"prometheus is restarting"
        result = [{"metric": {"agent": "bot", "version": "v2", "arm": "candidate"}, "value": [T0, _value(query)]}]
        return 200, "application/json", json.dumps({"status": "success", "data": {"resultType": "vector",
                                                                                   "result": result}}).encode()


def _value(query: str) -> str:
    for marker, value in (("histogram_quantile", "0.1"), ('status="error"', "1"), ("tool_calls", "100"),
                          ("sessions", "10"), ("spend", "1.0")):
        if marker in query:
            return value
    return "1"


def test_an_outage_is_one_message_per_evaluation_and_the_first_cycle_after_it_promotes(services: Services) -> None:
    place(services)  # canary 1%; the fast policy evaluates every second and holds on metrics errors
    fake = FlakyPrometheus()
    with LoopbackHTTPServer(fake.respond) as prometheus:
        source = PrometheusSource(prometheus.url, timeout_s=2, fail_max=2, reset_timeout_s=300)
        fake.down = True
        reports: list[dict[str, Any]] = []
        for step in range(1, 9):
            outcomes = evaluate_all(services, source, now=AFTER_A_WINDOW + step)
            assert [o.result for o in outcomes] == ["error"]
            reports.append(outcomes[0].report)
        messages = [r["metrics_source"]["error"] for r in reports]
        for report, message in zip(reports, messages, strict=True):
            assert message.count(OUTAGE) == 1 and message.count("circuit open") <= 1, message
            assert len(message) < 200, message
            assert sum(OUTAGE in reason for reason in report["reasons"]) == 1
            assert {c["detail"] for c in report["checks"]} == {"metrics unavailable"}
        assert len(set(messages[2:])) == 1, "an open breaker's message must not grow cycle after cycle"
        sizes = [len(json.dumps(r)) for r in reports[2:]]
        assert max(sizes) - min(sizes) < 10, sizes
        held = rollout_of(services)
        assert held.state == "held" and held.state_reason.count(OUTAGE) == 1

        fake.down = False
        started = time.monotonic()
        outcomes = evaluate_all(services, source, now=AFTER_A_WINDOW + 9)
        assert time.monotonic() - started < 5, "recovery must not wait for the breaker's reset timeout"
    assert [(o.result, o.transition) for o in outcomes] == [("promote", "promote")]
    assert outcomes[0].report["metrics_source"]["available"] is True
    assert PROBE in fake.queries
    assert (rollout_of(services).stage, rollout_of(services).tier) == ("canary", 1)


def test_breaker_settings_come_from_the_environment(tmp_path: Any) -> None:
    env = {"GATEKEEPER_POLICY_DIR": str(POLICIES), "GATEKEEPER_PROMETHEUS_URL": "http://127.0.0.1:9/",
           "GATEKEEPER_PROMETHEUS_FAIL_MAX": "7", "GATEKEEPER_PROMETHEUS_RESET_TIMEOUT": "12s"}
    settings = Settings.from_env(env)
    db = Database(f"sqlite:///{tmp_path / 'gk.db'}")
    try:
        source = build_source(settings, db)
    finally:
        db.dispose()
    assert isinstance(source, PrometheusSource)
    assert (source.breaker.fail_max, source.breaker.reset_timeout) == (7, 12.0)
    assert Settings(policy_dir=POLICIES).prometheus_fail_max == 3
    for bad in ({"GATEKEEPER_PROMETHEUS_FAIL_MAX": "0"}, {"GATEKEEPER_PROMETHEUS_FAIL_MAX": "many"},
                {"GATEKEEPER_PROMETHEUS_RESET_TIMEOUT": "soon"}):
        with pytest.raises(ConfigError):
            Settings.from_env({**env, **bad})
