"""Gate-cycle benchmark: one evaluation cycle for 1,000 agents against a real Prometheus.

Run: `python bench/gate_cycle.py [--agents 1000] [--extra-query]`. It starts a real
Prometheus (Debian package `prometheus`) scraping a fake exporter that serves the SPEC §6
metrics of every agent's candidate, places every agent's rollout at canary 1% on a temporary
SQLite file, and times `gate_cycle.evaluate_all` with the Prometheus source: the PromQL queries
(batched per metric across agents, so their number does not grow with agents) and the
per-rollout transactions that store each report and promote. `--extra-query` gives the policy
one extra PromQL check, which is templated per agent and so costs one query per agent.
Target: a cycle well inside the default gate interval of 30 s. A benchmark, not a test: it
prints figures and their ratio to the target, and never fails on a time.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # for tests.support: the same real-binary helpers the tests use

from gatekeeper import create_app, rollouts  # noqa: E402
from gatekeeper.gate_cycle import evaluate_all  # noqa: E402
from gatekeeper.prometheus_source import PrometheusSource  # noqa: E402
from gatekeeper.services import Services  # noqa: E402
from gatekeeper.tier_signals import SignalBatch, SignalRequest  # noqa: E402
from tests.support.http import LoopbackHTTPServer, RecordedRequest  # noqa: E402
from tests.support.services import PrometheusServer  # noqa: E402

TARGET_S = 30.0
POLICY = {
    "name": "bench", "agents": [], "tools": {"search_kb": "read_only"},
    "stages": {"canary": {"tiers": [1, 5], "caps": {"tool_calls_per_session": 20, "spend_per_session": 0.5}},
               "expansion": {"tiers": [50, 100], "caps": {"tool_calls_per_session": 40, "spend_per_session": 1}}},
    "stable_caps": {"tool_calls_per_session": 60, "spend_per_session": 2},
    # A 1s interval lets the second cycle follow the first at once (a tier waits one interval).
    "gate": {"interval": "1s", "window": "1m", "soak": "0s", "min_sessions": 1},
}
EXTRA = {"denial_rate": {"max": 0.05, "query": 'sum(rate(gatekeeper_decisions_total{agent="{agent}",'
                                                'verdict="deny"}[{window}])) or vector(0)'}}


class Exporter:
    """Serve every agent's candidate counters; each scrape adds a session, 99 ok calls and 1 error."""

    def __init__(self, agents: list[str]) -> None:
        self.agents = agents
        self.scrapes = 0
        self.lock = threading.Lock()

    def respond(self, request: RecordedRequest) -> tuple[int, str, bytes]:
        with self.lock:
            self.scrapes += 1
            n = self.scrapes
        lines = []
        for agent in self.agents:
            labels = f'agent="{agent}",version="v2",arm="candidate"'
            lines += [f"gatekeeper_sessions_total{{{labels}}} {n}",
                      f'gatekeeper_tool_calls_total{{{labels},tool_class="read_only",status="ok"}} {99 * n}',
                      f'gatekeeper_tool_calls_total{{{labels},tool_class="read_only",status="error"}} {n}',
                      f"gatekeeper_spend_dollars_total{{{labels}}} {0.05 * n:.2f}",
                      *[f'gatekeeper_tool_call_latency_seconds_bucket{{{labels},le="{le}"}} {100 * n}'
                        for le in ("0.25", "1.0", "+Inf")]]
        return 200, "text/plain; version=0.0.4", ("\n".join(lines) + "\n").encode()


def place_agents(folder: Path, count: int, *, extra_query: bool) -> Services:
    """Write the policy and put `count` rollouts at canary 1%."""
    policies = folder / "policies"
    policies.mkdir()
    policy = {**POLICY, "gate": {**POLICY["gate"], **({"queries": EXTRA} if extra_query else {})}}  # type: ignore[dict-item]
    (policies / "bench.yaml").write_text(yaml.safe_dump(policy))
    app = create_app({"database_url": f"sqlite:///{folder / 'bench.db'}", "policy_dir": policies})
    svc: Services = app.extensions["gatekeeper"]
    svc.db.upgrade()
    now = time.time()
    for index in range(count):
        name = f"agent-{index:04d}"
        rollouts.register_agent(svc, name, policy="bench", stable_version="v1", now=now)
        rollouts.start_rollout(svc, name, version="v2", actor="bench", reason="bench", now=now)
        for _ in range(2):  # twin -> shadow -> canary 1%
            rollouts.act(svc, name, "promote", actor="bench", reason="bench", now=now)
    return svc


def wait_for_samples(prometheus: PrometheusServer, agent: str, *, samples: int = 4, timeout: float = 60) -> None:
    """Wait until Prometheus holds enough scrapes for increase() over the window."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = prometheus.query(f'count_over_time(gatekeeper_sessions_total{{agent="{agent}"}}[1m])')
        if found and float(found[0]["value"][1]) >= samples:
            return
        time.sleep(0.5)
    raise SystemExit("Prometheus did not scrape the exporter in time")


class TimedSource:
    """The Prometheus source, timing its part of the cycle."""

    name = "prometheus"

    def __init__(self, source: PrometheusSource) -> None:
        self.source = source
        self.seconds = 0.0

    def tier_signals(self, requests: Sequence[SignalRequest], *, now: float) -> SignalBatch:
        started = time.perf_counter()
        try:
            return self.source.tier_signals(requests, now=now)
        finally:
            self.seconds += time.perf_counter() - started


def cycle(svc: Services, source: PrometheusSource, *, now: float) -> tuple[float, float, int, Counter[str]]:
    """Run one cycle; return its seconds, the seconds spent in Prometheus, its queries and its results."""
    before, timed = source.queries_sent, TimedSource(source)
    started = time.perf_counter()
    outcomes = evaluate_all(svc, timed, now=now)
    elapsed = time.perf_counter() - started
    results = Counter(f"{o.result}->{o.transition}" for o in outcomes)
    return elapsed, timed.seconds, source.queries_sent - before, results


def main() -> None:
    """Print the time and query count of gate cycles over many agents."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=1000)
    parser.add_argument("--extra-query", action="store_true", help="add one templated PromQL check per agent")
    args = parser.parse_args()
    names = [f"agent-{index:04d}" for index in range(args.agents)]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        setup = time.perf_counter()
        svc = place_agents(folder, args.agents, extra_query=args.extra_query)
        print(f"placed {args.agents} rollouts at canary 1% in {time.perf_counter() - setup:.1f} s")
        with LoopbackHTTPServer(Exporter(names).respond) as target, \
                PrometheusServer(folder, scrape_targets=[target.target], scrape_interval="1s") as prometheus:
            wait_for_samples(prometheus, names[-1])
            source = PrometheusSource(prometheus.url, timeout_s=10)
            for label in ("first", "second"):
                now = time.time()
                elapsed, in_prometheus, queries, results = cycle(svc, source, now=now)
                print(f"{label} cycle: {args.agents} agents, {queries} PromQL queries, {elapsed:.2f} s "
                      f"(Prometheus {in_prometheus:.2f} s, evaluate+store+act {elapsed - in_prometheus:.2f} s, "
                      f"{elapsed / args.agents * 1000:.2f} ms per agent); results {dict(results)}")
        svc.db.dispose()
    print(f"target: a cycle <= {TARGET_S:.0f} s (the default gate interval); ratio to target "
          f"{elapsed / TARGET_S:.2f}")


if __name__ == "__main__":
    main()
