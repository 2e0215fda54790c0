"""In-process decision benchmark: the core verdict plus one SQLite transaction, no HTTP.

Run: `python bench/inprocess.py [--decisions 20000]`. It builds a real app on a temporary
SQLite file with the repository's policies, registers an agent, opens sessions and times
`gatekeeper.decisions.decide` (what POST /v1/decisions runs after parsing the body). Beside it,
alternated, on the same database: `ceilings.bare_decide`, the same reservation and decision row
without the session read and the verdict, and the same two statements on a raw sqlite3
connection (`ceilings.raw_decider`): the least any decision can cost here. And the outcome report
of a live candidate call (`gatekeeper.decisions.report_outcome`: settle the decision and the spend,
count it in the kill switch's buckets and sum the window), each after an untimed decision.
Targets: median <= 50 µs (issue 3), later restated as <= 1.7x the raw sqlite3 transaction;
outcome <= 2x a decision (issue 17). A benchmark, not a test: it prints figures, never fails.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from ceilings import bare_decide, raw_decider

from gatekeeper import create_app, decisions, rollouts, sessions
from gatekeeper.core.budgets import to_micros
from gatekeeper.services import Services

REPO = Path(__file__).resolve().parent.parent
TARGET_US = 50.0
RAW, BARE, DECIDE = ("the same on raw sqlite3 (ceilings.raw_decider)", "bare transaction (ceilings.bare_decide)",
                     "gatekeeper decide")
OUTCOME = "gatekeeper report_outcome (candidate call, kill switch)"
RAW_RATIO, OUTCOME_RATIO = 1.7, 2.0


def _setup(folder: Path, sessions_needed: int, candidates_needed: int) -> tuple[Services, list[str], list[str]]:
    app = create_app({"database_url": f"sqlite:///{folder / 'bench.db'}", "policy_dir": REPO / "policies"})
    svc: Services = app.extensions["gatekeeper"]
    svc.db.upgrade()
    now = time.time()
    rollouts.register_agent(svc, "support-bot", policy="support-default", stable_version="v1", now=now)
    # Stable caps allow 60 calls a session: enough sessions that every timed decision is an allow.
    ids = [sessions.start_session(svc, "support-bot", session_key=f"k{i}", environment="live", scenario=None,
                                  twin_snapshot_at=None, now=now).session.id for i in range(sessions_needed)]
    # Then a rollout at 100% of expansion: every session started from here on is a live candidate.
    rollouts.start_rollout(svc, "support-bot", version="v2", actor="bench", reason="bench", now=now)
    for _ in range(7):
        rollouts.act(svc, "support-bot", "promote", actor="bench", reason="bench", now=now)
    candidates = [sessions.start_session(svc, "support-bot", session_key=f"c{i}", environment="live", scenario=None,
                                         twin_snapshot_at=None, now=now).session for i in range(candidates_needed)]
    assert all(row.arm == "candidate" for row in candidates)
    return svc, ids, [row.id for row in candidates]


def _time(decide: Callable[..., object], svc: Services, ids: list[str], count: int) -> list[float]:
    samples = []
    for i in range(count):
        ask = decisions.Ask(ids[i % len(ids)], "search_kb", to_micros(0.0))
        started = time.perf_counter()
        decide(svc, ask, scope="support-bot", now=time.time())
        samples.append(time.perf_counter() - started)
    return samples


def _report(_decide: object, svc: Services, ids: list[str], count: int) -> list[float]:
    samples = []
    for i in range(count):
        ask = decisions.Ask(ids[i % len(ids)], "search_kb", to_micros(0.0))
        decision_id = decisions.decide(svc, ask, scope="support-bot", now=time.time()).decision_id
        started = time.perf_counter()
        decisions.report_outcome(svc, decision_id, scope="support-bot", status="ok", actual_micros=None,
                                 latency_ms=12.5, now=time.time())
        samples.append(time.perf_counter() - started)
    return samples


def main() -> None:
    """Print the median, p90 and p99 of in-process decisions, and of the bare transaction beside them."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--decisions", type=int, default=20_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        # Each kind has its own sessions, at most 50 calls each (stable caps allow 60): every call is an allow.
        per_kind = 10 + args.decisions // 45 + 10
        # Candidate caps allow 40 calls a session: at most 30 each.
        svc, ids, candidates = _setup(Path(folder), sessions_needed=3 * per_kind,
                                      candidates_needed=10 + args.decisions // 25 + 10)
        kinds = {RAW: raw_decider(Path(folder) / "bench.db"), BARE: bare_decide, DECIDE: decisions.decide,
                 OUTCOME: None}
        found: dict[str, list[float]] = {name: [] for name in kinds}
        own = {name: ids[n * per_kind:(n + 1) * per_kind] for n, name in enumerate(kinds) if name != OUTCOME}
        own[OUTCOME] = candidates
        timers = {name: _report if name == OUTCOME else _time for name in kinds}
        for name, decide in kinds.items():  # warm-up: connections, statement cache, policy snapshot
            timers[name](decide, svc, own[name][:10], 300)  # type: ignore[operator]
        for part in range(10):  # alternate, so that a noisy neighbour touches every kind alike
            for name, decide in kinds.items():
                found[name] += timers[name](decide, svc, own[name][10 + part::10],  # type: ignore[operator]
                                            args.decisions // 10)
        svc.db.dispose()
    for name, samples in found.items():
        samples.sort()
        p90, p99 = (samples[int(len(samples) * q)] * 1e6 for q in (0.90, 0.99))
        print(f"{name}: {len(samples)} calls  median {statistics.median(samples) * 1e6:.1f} µs  "
              f"mean {statistics.mean(samples) * 1e6:.1f} µs  p90 {p90:.1f} µs  p99 {p99:.1f} µs")
    median, bare, raw, outcome = (statistics.median(found[name]) * 1e6 for name in (DECIDE, BARE, RAW, OUTCOME))
    print(f"target median <= {TARGET_US:.0f} µs: {'met' if median <= TARGET_US else 'NOT met'} "
          f"(ratio to target {median / TARGET_US:.2f}; bare transaction {bare / TARGET_US:.2f}, "
          f"on raw sqlite3 {raw / TARGET_US:.2f})")
    print(f"guard rail decide <= {RAW_RATIO}x the raw sqlite3 transaction: "
          f"{'met' if median <= RAW_RATIO * raw else 'NOT met'} ({median / raw:.2f}x)")
    met = "met" if outcome <= OUTCOME_RATIO * median else "NOT met"
    print(f"target outcome <= {OUTCOME_RATIO:.0f}x a decision: {met} ({outcome / median:.2f}x)")


if __name__ == "__main__":
    main()
