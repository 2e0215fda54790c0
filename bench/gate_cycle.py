"""Gate-cycle benchmark: one evaluation cycle for 1,000 and 10,000 agents against a real Prometheus.

Run: `python bench/gate_cycle.py [--agents 1000,10000] [--rounds 3] [--extra-query]`. For each
size it starts a real Prometheus (Debian package `prometheus`) scraping a fake exporter that
serves the SPEC §6 metrics of every agent's candidate, and builds a SQLite file with every
agent's rollout at canary 1%: the first agent is placed through the use cases (register, start,
promote twice), the others are copies of its rows (placing 10,000 through the use cases would
take minutes; the gate cycle reads only agents, rollouts and evaluations). Each round copies
that file afresh and times `gate_cycle.evaluate_all` with the Prometheus source in two cycles:

- steady: every tier began 2 minutes ago and soaks for 10: every agent is judged on its numbers
  and its evaluation stored, none moves (the common cycle);
- promote: every tier began an hour ago: every agent is promoted (every rollout moves, the
  worst cycle: a transition, its audit entry and its notification per agent).

It prints each cycle's wall time, this process's CPU time (Prometheus runs in its own process),
and the breakdown from `gate_cycle.CycleTimes`: due (which rollouts are due), Prometheus (the
batched PromQL queries), evidence (twin and shadow reads), judge (the pure gates), write (the
write transactions less act), act (transitions and counter updates), with the number of write
transactions and the longest one (how long a decision may wait for SQLite's write lock); then
medians and ranges side by side. `--extra-query` gives the policy one extra PromQL check, which
is templated per agent and so costs one query per agent. Targets (issue 17): 1,000 agents < 1 s,
10,000 < 10 s. A benchmark, not a test: it prints figures and never fails on a time.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy import insert, select, text, update

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # for tests.support: the same real-binary helpers the tests use

from gatekeeper import rollouts  # noqa: E402
from gatekeeper.config import Settings  # noqa: E402
from gatekeeper.gate_cycle import CycleTimes, evaluate_all  # noqa: E402
from gatekeeper.prometheus_source import PrometheusSource  # noqa: E402
from gatekeeper.services import Services  # noqa: E402
from gatekeeper.store.models import Agent, Rollout  # noqa: E402
from tests.support.http import LoopbackHTTPServer, RecordedRequest  # noqa: E402
from tests.support.services import PrometheusServer  # noqa: E402

TARGETS_S = {1000: 1.0, 10000: 10.0}
POLICY: dict[str, Any] = {
    "name": "bench", "agents": [], "tools": {"search_kb": "read_only"},
    "stages": {"canary": {"tiers": [1, 5], "caps": {"tool_calls_per_session": 20, "spend_per_session": 0.5}},
               "expansion": {"tiers": [50, 100], "caps": {"tool_calls_per_session": 40, "spend_per_session": 1}}},
    "stable_caps": {"tool_calls_per_session": 60, "spend_per_session": 2},
    "gate": {"interval": "30s", "window": "1m", "soak": "10m", "min_sessions": 1},
}
EXTRA = {"denial_rate": {"max": 0.05, "query": 'sum(rate(gatekeeper_decisions_total{agent="{agent}",'
                                                'verdict="deny"}[{window}])) or vector(0)'}}
SCENARIOS = {"steady": 120.0, "promote": 3600.0}  # how long ago every tier began
PHASES = ("due", "metrics", "evidence", "judge", "write", "act")


def agent_name(index: int) -> str:
    return f"agent-{index:05d}"


class Exporter:
    """Serve every agent's candidate counters; each scrape adds a session, 99 ok calls and 1 error.

    The body is built once with placeholders and filled per scrape with `bytes.replace`, so that
    serving 10,000 agents' series costs this process (whose CPU the cycle's figure counts) little.
    """

    SERIES = (("gatekeeper_sessions_total{", "}", b"@S@"),
              ("gatekeeper_tool_calls_total{", ',tool_class="read_only",status="ok"}', b"@C@"),
              ("gatekeeper_tool_calls_total{", ',tool_class="read_only",status="error"}', b"@S@"),
              ("gatekeeper_spend_dollars_total{", "}", b"@D@"),
              *[("gatekeeper_tool_call_latency_seconds_bucket{", f',le="{le}"}}', b"@L@")
                for le in ("0.25", "1.0", "+Inf")])

    def __init__(self, agents: list[str]) -> None:
        self.template = b"".join(
            f'{name}agent="{agent}",version="v2",arm="candidate"{tail} '.encode() + placeholder + b"\n"
            for agent in agents for name, tail, placeholder in self.SERIES)
        self.scrapes = 0
        self.lock = threading.Lock()

    def respond(self, request: RecordedRequest) -> tuple[int, str, bytes]:
        with self.lock:
            self.scrapes += 1
            n = self.scrapes
        body = self.template
        for placeholder, value in ((b"@S@", n), (b"@C@", 99 * n), (b"@D@", f"{0.05 * n:.2f}"), (b"@L@", 100 * n)):
            body = body.replace(placeholder, str(value).encode())
        return 200, "text/plain; version=0.0.4", body


def build_template(folder: Path, count: int, *, extra_query: bool) -> tuple[Path, Path]:
    """Write the policy and a database with `count` rollouts at canary 1%; return the policy folder and file."""
    policies = folder / "policies"
    policies.mkdir()
    gate = {**POLICY["gate"], **({"queries": EXTRA} if extra_query else {})}
    (policies / "bench.yaml").write_text(yaml.safe_dump({**POLICY, "gate": gate}))
    path = folder / "template.db"
    svc = open_services(path, policies)
    svc.db.upgrade()
    now = time.time()
    first = agent_name(0)
    rollouts.register_agent(svc, first, policy="bench", stable_version="v1", now=now)
    rollouts.start_rollout(svc, first, version="v2", actor="bench", reason="bench", now=now)
    for _ in range(2):  # twin -> shadow -> canary 1%
        rollouts.act(svc, first, "promote", actor="bench", reason="bench", now=now)
    with svc.db.transaction() as db:  # the other agents: copies of the first one's rows
        agent = db.execute(select(Agent)).scalar_one()
        rollout = db.execute(select(Rollout)).scalar_one()
        agent_row = {k: v for k, v in agent.model_dump().items() if k not in ("id", "rollout_id")}
        rollout_row = {k: v for k, v in rollout.model_dump().items() if k not in ("id", "agent_id")}
        db.execute(insert(Agent), [{**agent_row, "name": agent_name(i)} for i in range(1, count)])
        ids = [row[0] for row in db.execute(select(Agent.id).where(Agent.id != agent.id).order_by(Agent.id))]
        db.execute(insert(Rollout), [{**rollout_row, "agent_id": agent_id} for agent_id in ids])
        db.execute(update(Agent).where(Agent.id != agent.id).values(rollout_id=select(Rollout.id).where(
            Rollout.agent_id == Agent.id).scalar_subquery()))
    svc.db.dispose()
    return policies, path


def open_services(path: Path, policies: Path) -> Services:
    return Services.build(Settings(database_url=f"sqlite:///{path}", policy_dir=policies, policy_reload_s=0.0))


def wait_for_samples(prometheus: PrometheusServer, agent: str, *, samples: int = 4, timeout: float = 90) -> None:
    """Wait until Prometheus holds enough scrapes for increase() over the window."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = prometheus.query(f'count_over_time(gatekeeper_sessions_total{{agent="{agent}"}}[1m])')
        if found and float(found[0]["value"][1]) >= samples:
            return
        time.sleep(0.5)
    raise SystemExit("Prometheus did not scrape the exporter in time")


@dataclass
class Measured:
    """One timed cycle."""

    size: int
    scenario: str
    wall: float
    cpu: float
    times: CycleTimes
    queries: int
    results: Counter[str]


def cycle(folder: Path, template: Path, policies: Path, source: PrometheusSource, *, size: int, scenario: str,
          run: int) -> Measured:
    """Copy the template, start every tier `SCENARIOS[scenario]` seconds ago, and time one cycle on it."""
    path = folder / f"run-{run}.db"
    shutil.copyfile(template, path)
    svc = open_services(path, policies)
    now = time.time()
    with svc.db.transaction() as db:
        db.execute(update(Rollout).values(tier_started_at=now - SCENARIOS[scenario]))
    with svc.db.reading() as db:  # warm the connection and the page cache, as a running scheduler's are
        db.execute(text("SELECT count(*) FROM rollouts")).one()
    times, before = CycleTimes(), source.queries_sent
    started_cpu, started = time.process_time(), time.perf_counter()
    outcomes = evaluate_all(svc, source, now=now, times=times)
    wall, cpu = time.perf_counter() - started, time.process_time() - started_cpu
    svc.db.dispose()
    path.unlink()
    return Measured(size, scenario, wall, cpu, times, source.queries_sent - before,
                    Counter(f"{o.result}->{o.transition}" for o in outcomes))


def line(m: Measured) -> str:
    t = m.times
    parts = " ".join(f"{name} {getattr(t, name):.3f}" for name in PHASES)
    return (f"{m.size:>6} agents {m.scenario:<8} wall {m.wall:6.3f} s  cpu {m.cpu:6.3f} s | {parts} | "
            f"{t.transactions} write tx, longest {t.longest_write * 1000:.0f} ms | {m.queries} queries | "
            f"{dict(m.results)}")


def run_size(size: int, *, rounds: int, extra_query: bool) -> list[Measured]:
    """Start Prometheus for `size` agents and time `rounds` rounds of every scenario."""
    names = [agent_name(i) for i in range(size)]
    measured: list[Measured] = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        started = time.perf_counter()
        policies, template = build_template(folder, size, extra_query=extra_query)
        print(f"{size} rollouts at canary 1% in {time.perf_counter() - started:.1f} s")
        with LoopbackHTTPServer(Exporter(names).respond) as target, \
                PrometheusServer(folder, scrape_targets=[target.target], scrape_interval="3s") as prometheus:
            wait_for_samples(prometheus, names[-1])
            source = PrometheusSource(prometheus.url, timeout_s=30)
            for number in range(rounds):
                for scenario in SCENARIOS:
                    measured.append(cycle(folder, template, policies, source, size=size, scenario=scenario,
                                          run=number))
                    print(line(measured[-1]), flush=True)
    return measured


def summary(measured: Sequence[Measured], sizes: Sequence[int]) -> None:
    """Print medians (and ranges) per scenario, the sizes side by side."""
    def cell(values: list[float]) -> str:
        return f"{statistics.median(values):.3f} ({min(values):.3f}-{max(values):.3f})"

    print("\nmedian (min-max) seconds over rounds; target: " +
          ", ".join(f"{size:,} agents < {TARGETS_S.get(size, size / 1000):g} s" for size in sizes))
    print("| scenario | figure | " + " | ".join(f"{size:,} agents" for size in sizes) + " |")
    print("|---|---|" + "---|" * len(sizes))
    for scenario in SCENARIOS:
        rows: dict[str, list[str]] = {}
        for size in sizes:
            found = [m for m in measured if m.size == size and m.scenario == scenario]
            figures = {"wall": [m.wall for m in found], "cpu (this process)": [m.cpu for m in found],
                       **{("Prometheus" if name == "metrics" else name): [getattr(m.times, name) for m in found]
                          for name in PHASES},
                       "longest write tx": [m.times.longest_write for m in found],
                       "per agent, ms": [m.wall / size * 1000 for m in found]}
            for name, values in figures.items():
                rows.setdefault(name, []).append(cell(values))
        for name, cells in rows.items():
            print(f"| {scenario} | {name} | " + " | ".join(cells) + " |")


def main() -> None:
    """Print gate-cycle times for each number of agents, steady and promoting, with their breakdown."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", default="1000,10000", help="comma-separated numbers of agents")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--extra-query", action="store_true", help="add one templated PromQL check per agent")
    args = parser.parse_args()
    sizes = [int(size) for size in args.agents.split(",")]
    measured = [m for size in sizes for m in run_size(size, rounds=args.rounds, extra_query=args.extra_query)]
    summary(measured, sizes)


if __name__ == "__main__":
    main()
