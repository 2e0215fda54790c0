"""The whole loop with real binaries: SDK traffic -> /metrics -> Prometheus -> scheduler -> rollout,
Prometheus rules -> Alertmanager -> POST /v1/alerts, and twin scenario runs through the SDK."""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from flask import Flask
from werkzeug.serving import WSGIRequestHandler, make_server

from gatekeeper.client import Gatekeeper
from gatekeeper.core.bucketing import bucket, within
from gatekeeper.gate_cycle import evaluate_all
from gatekeeper.metric_sources import InMemorySource
from gatekeeper.prometheus_source import PrometheusSource
from gatekeeper.scheduler import GateScheduler
from gatekeeper.services import Services
from gatekeeper.store.models import AlertReceipt, GateEvaluation, Transition
from tests.support.gates import place, rollout_of, rows
from tests.support.services import AlertmanagerServer, PrometheusServer, require_binary

LOOP_S = 90.0  # the most any loop below waits for the system to move


@pytest.fixture
def policy_changes() -> dict[str, Any]:
    return {"gate": {"soak": "2s"}}


class QuietHandler(WSGIRequestHandler):
    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass  # thousands of requests per test would drown the report


class AppServer:
    """The real Flask app served on a loopback port from a thread, counting requests by path."""

    def __init__(self, app: Flask) -> None:
        self.hits: Counter[tuple[str, str]] = Counter()
        wsgi = app.wsgi_app

        def counting(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
            self.hits[(environ["REQUEST_METHOD"], environ["PATH_INFO"])] += 1
            return wsgi(environ, start_response)

        self._server = make_server("127.0.0.1", 0, counting, threaded=True,
                                   request_handler=QuietHandler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self._server.server_port}"

    def start(self) -> AppServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    @property
    def url(self) -> str:
        return f"http://{self.target}"


@pytest.fixture
def server(app: Flask) -> Iterator[AppServer]:
    served = AppServer(app).start()
    try:
        yield served
    finally:
        served.stop()


@pytest.fixture
def sdk(server: AppServer, make_token: Callable[..., dict[str, str]]) -> Callable[[str], Gatekeeper]:
    """Return an SDK client with an agent token for the named agent."""

    def make(agent: str) -> Gatekeeper:
        token = make_token("agent", agent=agent, name=f"{agent}-token")["Authorization"].removeprefix("Bearer ")
        return Gatekeeper(server.url, token, timeout=5)

    return make


def candidate_keys(agent: str, rollout_id: int) -> Iterator[str]:
    """Yield session keys that land on the candidate from canary 1% on (assignment is sticky)."""
    return (f"key-{n}" for n in itertools.count() if within(bucket(agent, rollout_id, f"key-{n}"), 1.0))


def run_sessions(gk: Gatekeeper, agent: str, keys: Iterator[str], *, errors: int = 0, count: int = 2) -> None:
    """Run `count` candidate sessions of three read-only calls each, `errors` of which fail."""
    for _ in range(count):
        session = gk.start_session(agent, session_key=next(keys))
        assert session.arm == "candidate", session
        for index in range(3):
            decision = session.decide("search_kb", 0.01)
            assert decision.verdict == "allow", decision
            session.report(decision, "error" if index < errors else "ok", latency_ms=40, actual_cost=0.01)
        session.end("ok")


def position(services: Services, agent: str) -> tuple[str, int, str]:
    rollout = rollout_of(services, agent)
    return rollout.stage, rollout.tier, rollout.state


@pytest.fixture
def prometheus(tmp_path: Path, server: AppServer) -> Iterator[PrometheusServer]:
    require_binary("prometheus")
    with PrometheusServer(tmp_path, scrape_targets=[server.target], scrape_interval="1s") as running:
        yield running


def scheduler_for(services: Services, prometheus: PrometheusServer) -> GateScheduler:
    source = PrometheusSource(prometheus.url, timeout_s=2, fail_max=2, reset_timeout_s=1)
    return GateScheduler(services, source, interval_s=1, holder="test-scheduler")


def test_prometheus_gates_promote_a_healthy_candidate_and_roll_back_an_unhealthy_one(
        services: Services, sdk: Callable[[str], Gatekeeper], prometheus: PrometheusServer) -> None:
    good, bad = place(services, "good"), place(services, "bad", stage="canary", tier=1)
    clients = {"good": sdk("good"), "bad": sdk("bad")}
    keys = {"good": candidate_keys("good", good.id or 0), "bad": candidate_keys("bad", bad.id or 0)}
    scheduler = scheduler_for(services, prometheus)
    deadline = time.monotonic() + LOOP_S
    while position(services, "good")[2] != "completed" or position(services, "bad")[2] != "paused":
        assert time.monotonic() < deadline, (position(services, "good"), position(services, "bad"))
        run_sessions(clients["good"], "good", keys["good"])
        run_sessions(clients["bad"], "bad", keys["bad"], errors=2)
        assert scheduler.tick().leader
        time.sleep(0.25)
    by_agent = {a: [(t.action, t.to_stage, t.to_tier) for t in rows(services, Transition)
                    if t.actor == "scheduler" and t.agent_id == r.agent_id] for a, r in (("good", good), ("bad", bad))}
    promotions = [move for move in by_agent["good"] if move[0] == "promote"]
    assert promotions == [("promote", "canary", 1), ("promote", "expansion", 0), ("promote", "expansion", 1),
                          ("promote", "expansion", 1)]  # the last one completes the rollout
    assert {move[0] for move in by_agent["good"]} <= {"promote", "hold"}  # held only until data arrived
    assert by_agent["bad"][-2:] == [("hold", "canary", 1), ("rollback", "canary", 0)]
    rollback = [t for t in rows(services, Transition) if t.action == "rollback"][-1]
    report = json.loads(rollback.metrics)
    assert report["metrics_source"]["name"] == "prometheus" and report["values"]["error_rate"] > 0.5
    assert report["consecutive"]["failures"] == 2


def test_prometheus_down_mid_rollout_holds_and_resumes(services: Services, sdk: Callable[[str], Gatekeeper],
                                                       prometheus: PrometheusServer) -> None:
    rollout = place(services, "steady")
    gk, keys, scheduler = sdk("steady"), candidate_keys("steady", rollout.id or 0), scheduler_for(services, prometheus)

    def drive_until(done: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + LOOP_S
        while not done():
            assert time.monotonic() < deadline, f"timed out waiting for {what}: {position(services, 'steady')}"
            run_sessions(gk, "steady", keys)
            scheduler.tick()
            time.sleep(0.25)

    drive_until(lambda: position(services, "steady")[:2] == ("canary", 1), "the first promotion")
    prometheus.stop()
    try:
        outage_ends = time.monotonic() + 5
        drive_until(lambda: time.monotonic() > outage_ends, "the outage to last 5 s")
        assert position(services, "steady") == ("canary", 1, "held")
        latest = json.loads(rows(services, GateEvaluation)[-1].report)
        assert latest["result"] == "error" and latest["metrics_source"]["available"] is False
        assert latest["metrics_source"]["unavailable_since"] is not None
    finally:
        prometheus.start()
    drive_until(lambda: position(services, "steady")[:2] == ("expansion", 0), "the promotion after the outage")
    results = [e.result for e in rows(services, GateEvaluation) if (e.stage, e.tier) == ("canary", 1)]
    assert "error" in results and results[-1] == "promote"
    assert results.index("promote") > results.index("error")  # never promoted while Prometheus was away


RULES = {"groups": [{"name": "gatekeeper-test", "rules": [{
    "alert": "CandidateErrors",
    "expr": 'sum by (agent, version) (increase(gatekeeper_tool_calls_total{arm="candidate",status="error"}[30s]))'
            " > 0",
    "labels": {"severity": "ticket"},  # not in the policy's by_severity: alerts.default (rollback) applies
    "annotations": {"summary": "{{ $labels.agent }} candidate {{ $labels.version }} is failing calls"}}]}]}


def test_an_alertmanager_alert_rolls_back_exactly_once(
        tmp_path: Path, services: Services, server: AppServer, sdk: Callable[[str], Gatekeeper],
        make_token: Callable[..., dict[str, str]]) -> None:
    require_binary("prometheus")
    require_binary("prometheus-alertmanager")
    rollout = place(services, "bot", stage="canary", tier=1)
    token = make_token("alertmanager", name="am")["Authorization"].removeprefix("Bearer ")
    rules = tmp_path / "rules.yml"
    rules.write_text(yaml.safe_dump(RULES))
    with AlertmanagerServer(tmp_path, webhook_url=f"{server.url}/v1/alerts", bearer_token=token,
                            repeat_interval="2s") as alertmanager, \
            PrometheusServer(tmp_path, scrape_targets=[server.target], rule_files=[rules],
                             alertmanager_url=alertmanager.url):
        gk, keys = sdk("bot"), candidate_keys("bot", rollout.id or 0)
        deadline = time.monotonic() + LOOP_S
        while position(services, "bot") != ("canary", 0, "paused"):
            assert time.monotonic() < deadline, position(services, "bot")
            run_sessions(gk, "bot", keys, errors=1, count=1)
            time.sleep(0.5)
        delivered = server.hits[("POST", "/v1/alerts")]
        while server.hits[("POST", "/v1/alerts")] < delivered + 2:  # Alertmanager repeats every 2 s
            assert time.monotonic() < deadline, "Alertmanager did not repeat the notification"
            time.sleep(0.25)
    rollbacks = [t for t in rows(services, Transition) if t.action == "rollback"]
    assert [(t.actor, t.to_stage, t.to_tier) for t in rollbacks] == [("alertmanager:am", "canary", 0)]
    assert "alert CandidateErrors firing (ticket)" in rollbacks[0].reason
    assert [(r.agent, r.action) for r in rows(services, AlertReceipt)] == [("bot", "rollback")]
    assert position(services, "bot") == ("canary", 0, "paused")


def twin_run(gk: Gatekeeper, scenario: str, tools: list[str], snapshot: datetime) -> dict[str, Any]:
    session = gk.start_session("twinbot", environment="twin", scenario=scenario, twin_snapshot_at=snapshot)
    for tool in tools:
        decision = session.decide(tool, 0.01)
        assert decision.verdict == "allow", decision
        session.report(decision, "ok", latency_ms=10)
    return session.end("ok", passed=True)


def test_twin_runs_through_the_sdk_fail_on_order_or_forbidden_tools_and_a_stale_snapshot_holds(
        services: Services, sdk: Callable[[str], Gatekeeper]) -> None:
    place(services, "twinbot", stage="twin")
    gk = sdk("twinbot")
    refund = ["lookup_customer", "search_kb", "refund_payment", "send_email"]
    stale, fresh = datetime.now(UTC) - timedelta(hours=2), datetime.now(UTC) - timedelta(minutes=5)
    step = itertools.count(1)

    def gate() -> dict[str, Any]:
        return evaluate_all(services, InMemorySource(), now=time.time() + next(step))[0].report

    for scenario, tools in [("refund-request", refund), ("refund-request", refund), ("faq", ["search_kb"]),
                            ("faq", ["search_kb"])]:
        assert twin_run(gk, scenario, tools, stale)["passed"] is True
    stale_report = gate()
    assert position(services, "twinbot") == ("twin", 0, "held")
    assert any("twin_snapshot_age_s failed" in reason for reason in stale_report["reasons"])
    wrong_order = twin_run(gk, "refund-request", ["refund_payment", "lookup_customer", "send_email"], fresh)
    forbidden = twin_run(gk, "refund-request", [*refund, "update_ticket"], fresh)
    assert (wrong_order["passed"], forbidden["passed"]) == (False, False)
    assert wrong_order["trajectory"]["problems"][0].startswith("expected refund_payment in order")
    assert forbidden["trajectory"]["problems"] == ["called forbidden tool update_ticket"]
    failing = gate()
    assert failing["values"]["pass_rate"] == pytest.approx(4 / 6)
    assert any("pass_rate failed" in reason for reason in failing["reasons"])
    assert position(services, "twinbot") == ("twin", 0, "held")
    for _ in range(2):
        twin_run(gk, "faq", ["search_kb"], fresh)
    assert gate()["result"] == "promote"
    assert position(services, "twinbot") == ("shadow", 0, "progressing")
