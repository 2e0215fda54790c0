"""One contract, every metrics source: built-in, in-memory and Prometheus (the real binary) answer alike.

Each test runs against the three sources told the same traffic story (tests/support/source_worlds.py):
the same numbers within what a source can measure, "no data" as None (never 0.0) in each, so the
tier gate's reasons read the same whichever source a deployment uses.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from gatekeeper.core.gates import Counters, GateReport, SourceStatus, Where
from gatekeeper.core.policy import TierGate
from gatekeeper.core.tier_gate import TierSignals, evaluate_tier_gate, tier_values
from gatekeeper.tier_signals import MetricsSource, SignalBatch
from tests.support.services import PrometheusServer, require_binary
from tests.support.source_worlds import (
    AGENTS,
    SOURCES,
    BuiltinWorld,
    MemoryWorld,
    PrometheusWorld,
    World,
    story_prometheus,
)

GATE = TierGate(interval_s=1, window_s=30, soak_s=0, min_sessions=2, max_error_rate=0.2, max_p95_latency_s=2.0,
                max_cost_per_session_micros=400_000, failure_limit=2, on_metrics_error="hold", error_limit=2,
                queries=())
NO_DATA = ["too few sessions: no data", "no data for error_rate", "no data for p95_latency_s",
           "no data for cost_per_session", "no data for overrun_rate"]
NUMBERS = ("sessions", "tool_calls", "errors", "p95_latency_s", "spend_dollars", "overruns")


@pytest.fixture(scope="module")
def story_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
    require_binary("prometheus")
    yield from story_prometheus(tmp_path_factory.mktemp("story"))


@pytest.fixture(params=SOURCES)
def world(request: pytest.FixtureRequest) -> World:
    if request.param == "builtin":
        return BuiltinWorld(request.getfixturevalue("services"))
    if request.param == "memory":
        return MemoryWorld()
    return PrometheusWorld(request.getfixturevalue("story_server"))


def ask(world: World, *agents: str, source: MetricsSource | None = None, now: float | None = None) -> SignalBatch:
    return (source or world.source).tier_signals([world.request(a) for a in agents],
                                                 now=world.now() if now is None else now)


def signals_of(world: World, agent: str) -> TierSignals:
    found = ask(world, agent).for_request(world.request(agent))
    assert found is not None
    return found


def judge(signals: TierSignals | None, source: SourceStatus, *, now: float) -> GateReport:
    return evaluate_tier_gate(GATE, signals, where=Where("canary", 0, "canary 1%", 1.0), tier_started_at=now - 3600,
                              counters=Counters(), source=source, now=now)


@pytest.mark.parametrize("agent", ["idle", "quiet"])
def test_no_traffic_in_the_window_is_no_data_never_zero(world: World, agent: str) -> None:
    signals = signals_of(world, agent)
    assert {name: getattr(signals, name) for name in NUMBERS} == dict.fromkeys(NUMBERS)
    report = judge(signals, SourceStatus(world.name), now=world.now())
    assert (report.result, list(report.decision.reasons)) == ("hold", NO_DATA)
    assert {c.name: c.detail for c in report.checks}["sessions"] == "no data"


def test_traffic_gives_the_same_numbers(world: World) -> None:
    signals = signals_of(world, "busy")
    values = tier_values(signals, traffic_percent=1.0)
    assert values["sessions"] is not None and values["sessions"] >= 2
    assert values["error_rate"] == pytest.approx(0.1, abs=0.005)
    assert values["cost_per_session"] == pytest.approx(0.1, rel=0.05)
    assert values["overrun_rate"] == 0.0  # calls and no overrun: zero, which is data
    assert signals.p95_latency_s is not None and 0.3 <= signals.p95_latency_s <= 0.5  # exact, or its bucket
    report = judge(signals, SourceStatus(world.name), now=world.now())
    assert (report.result, list(report.decision.reasons)) == ("promote", ["every check passed"])


def test_calls_without_errors_are_zero_errors_not_no_data(world: World) -> None:
    signals = signals_of(world, "calm")
    assert signals.errors == 0.0 and signals.tool_calls is not None and signals.tool_calls > 0
    assert tier_values(signals, traffic_percent=1.0)["error_rate"] == 0.0


def test_one_batch_answers_every_agent_and_queries_do_not_grow_with_agents(world: World) -> None:
    one = ask(world, "busy")
    every = ask(world, *AGENTS)
    assert one.status == every.status == SourceStatus(world.name)
    assert every.queries == one.queries
    answers = {agent: every.for_request(world.request(agent)) for agent in AGENTS}
    assert all(found is not None for found in answers.values())
    assert [agent for agent, found in answers.items() if found and found.sessions is not None] == ["busy", "calm"]


def test_an_outage_is_unavailable_from_its_first_failure_never_zero(world: World) -> None:
    broken = world.broken()
    now = world.now()
    first, second = ask(world, "busy", source=broken, now=now), ask(world, "busy", source=broken, now=now + 1)
    for batch in (first, second):
        assert (batch.status.name, batch.status.available, batch.status.unavailable_since) == (world.name, False, now)
        assert batch.status.error and batch.for_request(world.request("busy")) is None
    report = judge(second.for_request(world.request("busy")), second.status, now=now + 1)
    assert report.result == "error" and {c.result for c in report.checks} == {"error"}
    assert report.decision.reasons[0].startswith(f"metrics unavailable ({world.name}): ")

