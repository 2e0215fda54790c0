"""Prometheus metrics of SPEC §6, correct across gunicorn workers.

Counters and histograms of the request path live on a `Metrics` object built by `create_app`
on its own registry. Under `gatekeeper serve`, PROMETHEUS_MULTIPROC_DIR is set before any
worker starts, so prometheus_client writes every worker's values to files in that folder and
a scrape sums them (multiprocess mode). Rollout gauges are not counted in-process at all:
`RolloutCollector` reads them from the database at scrape time, so every worker and replica
reports the same truth. Labels are low-cardinality only; never a session or decision id.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from gatekeeper.core import ladder
from gatekeeper.policy_store import PolicyStore
from gatekeeper.store import scrape_records
from gatekeeper.store.db import Database

DURATION_BUCKETS = (0.0001, 0.00025, 0.0005, 0.00075, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0)
LATENCY_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0)
SESSION = ("agent", "version", "arm")


def multiprocess_dir() -> str | None:
    """Return the folder of multiprocess metric files, when this process runs under several workers."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR")


class Metrics:
    """The counters and histograms the request path updates, on one registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.decisions = Counter("gatekeeper_decisions_total", "Verdicts on tool calls",
                                 [*SESSION, "stage", "verdict", "reason"], registry=registry)
        self.tool_calls = Counter("gatekeeper_tool_calls_total", "Outcomes of executed tool calls",
                                  [*SESSION, "tool_class", "status"], registry=registry)
        self.tool_latency = Histogram("gatekeeper_tool_call_latency_seconds", "Tool-call latency reported by agents",
                                      SESSION, buckets=LATENCY_BUCKETS, registry=registry)
        self.sessions = Counter("gatekeeper_sessions_total", "Sessions started", SESSION, registry=registry)
        self.spend = Counter("gatekeeper_spend_dollars_total", "Settled spend of executed tool calls", SESSION,
                             registry=registry)
        self.overruns = Counter("gatekeeper_cost_overruns_total", "Outcomes whose actual cost exceeded the "
                                "decision's reservation", SESSION, registry=registry)
        self.decision_duration = Histogram("gatekeeper_decision_duration_seconds",
                                           "Server-side handling time of POST /v1/decisions",
                                           buckets=DURATION_BUCKETS, registry=registry)
        self._decision_children: dict[tuple[str, ...], Any] = {}

    def count_decision(self, *labels: str) -> None:
        """Count one verdict; the labelled child is kept, since `labels()` costs per decision."""
        child = self._decision_children.get(labels)
        if child is None:
            if len(self._decision_children) > 10_000:  # labels are low-cardinality; this only bounds memory
                self._decision_children.clear()
            child = self._decision_children[labels] = self.decisions.labels(*labels)
        child.inc()

    def render(self, db: Database, policies: PolicyStore) -> bytes:
        """Return the exposition: this registry, or every worker's files in multiprocess mode, plus rollouts."""
        folder = multiprocess_dir()
        if folder is None:
            return generate_latest(self.registry) + generate_latest(_only(RolloutCollector(db, policies)))
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=folder)
        registry.register(RolloutCollector(db, policies))
        return generate_latest(registry)


def _only(collector: Collector) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(collector)
    return registry


class RolloutCollector(Collector):
    """Rollout gauges and gate-evaluation counts, read from the database at scrape time."""

    def __init__(self, db: Database, policies: PolicyStore) -> None:
        self.db = db
        self.policies = policies

    def collect(self) -> Iterator[Metric]:
        """Yield gatekeeper_rollout_info, _traffic_percent, _kill_switch_open and gate evaluations."""
        info = GaugeMetricFamily("gatekeeper_rollout_info", "The rollout of each agent (1 per agent)",
                                 labels=["agent", "candidate", "stable", "stage"])
        traffic = GaugeMetricFamily("gatekeeper_rollout_traffic_percent", "Share of live sessions the candidate "
                                    "serves", labels=["agent"])
        killed = GaugeMetricFamily("gatekeeper_kill_switch_open", "1 while the kill switch holds the candidate",
                                   labels=["agent"])
        gates = CounterMetricFamily("gatekeeper_gate_evaluations", "Gate evaluations by result",
                                    labels=["agent", "result"])
        with self.db.reading() as db:
            rollouts, counts = scrape_records.agent_rollouts(db=db), scrape_records.evaluation_counts(db=db)
        for row in rollouts:
            info.add_metric([row.name, row.candidate or "", row.stable or "", row.stage or "none"], 1)
            traffic.add_metric([row.name], self._percent(row.policy, row.stage, row.tier))
            killed.add_metric([row.name], 1 if row.kill_switch_open else 0)
        for name, result, count in counts:
            gates.add_metric([name, result], count)
        yield from (info, traffic, killed, gates)

    def _percent(self, policy: str, stage: str | None, tier: int | None) -> float:
        loaded = self.policies.snapshot().by_name.get(policy)
        if stage is None or tier is None or loaded is None:
            return 0.0
        return ladder.traffic_percent(loaded.policy, ladder.Tier(stage, tier))
