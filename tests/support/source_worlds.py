"""One traffic story told to every metrics source, for the contract suite (tests/gates/test_source_contract.py).

What each agent's candidate did, as seen at `now` over a window of WINDOW_S seconds:

- busy: sessions of 10 tool calls each, one of them an error, $0.10 spent and 0.3 s per call;
- calm: the same without a single error;
- quiet: traffic only before the window;
- idle: never any traffic.

The built-in source reads it from sessions and decisions in a real SQLite file, Prometheus (the
real binary) scrapes it from a fake exporter of SPEC §6 counters, and the in-memory fake is set
with the numbers a source would report. `broken()` is the same kind of source cut off from its
data (a database file that cannot be opened, a port nobody listens on, a simulated outage).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from gatekeeper.core.tier_gate import TierSignals
from gatekeeper.metric_sources import BuiltinSource, InMemorySource
from gatekeeper.prometheus_source import PrometheusSource
from gatekeeper.services import Services
from gatekeeper.store.db import Database
from gatekeeper.tier_signals import MetricsSource, SignalRequest
from tests.support.gates import T0, add_session, place
from tests.support.http import LoopbackHTTPServer, RecordedRequest
from tests.support.services import PrometheusServer, free_port

AGENTS = ("busy", "calm", "quiet", "idle")
WINDOW_S = 30.0
SOURCES = ("builtin", "memory", "prometheus")


class World(Protocol):
    """A metrics source that has been told the story, and how to ask it."""

    name: str
    source: MetricsSource

    def request(self, agent: str) -> SignalRequest: ...

    def now(self) -> float: ...

    def broken(self) -> MetricsSource: ...


# -- built-in ----------------------------------------------------------------------------------


@dataclass
class BuiltinWorld:
    """The story as sessions and decisions of live candidate traffic."""

    services: Services
    name: str = "builtin"
    rollout_ids: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.source: MetricsSource = BuiltinSource(self.services.db)
        calls = {"busy": [("search_kb", "allow", "ok", 300.0)] * 9 + [("search_kb", "allow", "error", 300.0)],
                 "calm": [("search_kb", "allow", "ok", 300.0)] * 10}
        for agent in AGENTS:
            rollout = place(self.services, agent)
            self.rollout_ids[agent] = rollout.id or 0
            if agent in calls:
                for second in (1, 2, 3):
                    add_session(self.services, rollout, calls=calls[agent], started_at=T0 + second,
                                spend_micros=100_000)
            elif agent == "quiet":
                add_session(self.services, rollout, calls=calls["busy"], started_at=T0 - 100, spend_micros=100_000)

    def request(self, agent: str) -> SignalRequest:
        return SignalRequest(agent, "v2", self.rollout_ids[agent], WINDOW_S)

    def now(self) -> float:
        return T0 + 10

    def broken(self) -> MetricsSource:
        return BuiltinSource(Database(f"sqlite:///{Path('/nonexistent') / 'gatekeeper' / 'gone.db'}"))


# -- the in-memory fake ------------------------------------------------------------------------


class MemoryWorld:
    """The story as the numbers a source reports, zeros included where it saw nothing."""

    name = "memory"

    def __init__(self) -> None:
        zero = TierSignals(sessions=0.0, tool_calls=0.0, errors=0.0, spend_dollars=0.0, overruns=0.0)
        self.source: MetricsSource = InMemorySource({
            ("busy", "v2"): TierSignals(sessions=3, tool_calls=30, errors=3, p95_latency_s=0.3, spend_dollars=0.3,
                                        overruns=0),
            ("calm", "v2"): TierSignals(sessions=3, tool_calls=30, errors=0, p95_latency_s=0.3, spend_dollars=0.3),
            ("quiet", "v2"): zero})

    def request(self, agent: str) -> SignalRequest:
        return SignalRequest(agent, "v2", AGENTS.index(agent) + 1, WINDOW_S)

    def now(self) -> float:
        return T0 + 10

    def broken(self) -> MetricsSource:
        source = InMemorySource()
        source.fail("connection refused")
        return source


# -- Prometheus --------------------------------------------------------------------------------


class StoryExporter:
    """Serve the story's SPEC §6 counters; every scrape is one more step of busy's and calm's traffic."""

    def __init__(self) -> None:
        self.scrapes = 0
        self._lock = threading.Lock()

    def respond(self, request: RecordedRequest) -> tuple[int, str, bytes]:
        with self._lock:
            self.scrapes += 1
            n = self.scrapes
        lines = []
        for agent, ok, errors in (("busy", 9 * n, n), ("calm", 10 * n, 0), ("quiet", 9, 1)):
            steps = n if agent != "quiet" else 1  # quiet's counters never move after its first scrape
            labels = f'agent="{agent}",version="v2",arm="candidate"'
            lines += [f"gatekeeper_sessions_total{{{labels}}} {steps}",
                      f'gatekeeper_tool_calls_total{{{labels},tool_class="read_only",status="ok"}} {ok}',
                      f"gatekeeper_spend_dollars_total{{{labels}}} {0.1 * steps:.1f}",
                      *[f'gatekeeper_tool_call_latency_seconds_bucket{{{labels},le="{le}"}} {10 * steps}'
                        for le in ("0.5", "1.0", "+Inf")]]
            if errors:
                lines.append(f'gatekeeper_tool_calls_total{{{labels},tool_class="read_only",status="error"}} {errors}')
        return 200, "text/plain; version=0.0.4", ("\n".join(lines) + "\n").encode()


def story_prometheus(folder: Path) -> Iterator[PrometheusServer]:
    """Run Prometheus scraping the story every second, until it holds enough samples for the window."""
    with LoopbackHTTPServer(StoryExporter().respond) as target, \
            PrometheusServer(folder, scrape_targets=[target.target], scrape_interval="1s") as server:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            found = server.query(f'count_over_time(gatekeeper_sessions_total{{agent="quiet"}}[{WINDOW_S:.0f}s])')
            if found and float(found[0]["value"][1]) >= 5:
                break
            time.sleep(0.5)
        else:
            raise AssertionError("Prometheus never scraped 5 samples of the story")
        yield server


class PrometheusWorld:
    """The story as Prometheus scraped it."""

    name = "prometheus"

    def __init__(self, server: PrometheusServer) -> None:
        self.source: MetricsSource = PrometheusSource(server.url, timeout_s=5)

    def request(self, agent: str) -> SignalRequest:
        return SignalRequest(agent, "v2", AGENTS.index(agent) + 1, WINDOW_S)

    def now(self) -> float:
        return time.time()

    def broken(self) -> MetricsSource:
        return PrometheusSource(f"http://127.0.0.1:{free_port()}", timeout_s=2)
