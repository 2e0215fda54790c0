"""In-process decision benchmark: the core verdict plus one SQLite transaction, no HTTP.

Run: `python bench/inprocess.py [--decisions 20000]`. It builds a real app on a temporary
SQLite file with the repository's policies, registers an agent, opens sessions and times
`gatekeeper.decisions.decide` (what POST /v1/decisions runs after parsing the body). Beside it,
alternated, on the same database: `ceilings.bare_decide`, the same reservation and decision row
without the session read and the verdict, and the same two statements on a raw sqlite3
connection (`ceilings.raw_decider`): the least any decision can cost here.
Target (issue 3): median <= 50 µs. A benchmark, not a test: it prints figures, never fails.
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


def _setup(folder: Path, sessions_needed: int) -> tuple[Services, list[str]]:
    app = create_app({"database_url": f"sqlite:///{folder / 'bench.db'}", "policy_dir": REPO / "policies"})
    svc: Services = app.extensions["gatekeeper"]
    svc.db.upgrade()
    now = time.time()
    rollouts.register_agent(svc, "support-bot", policy="support-default", stable_version="v1", now=now)
    # Stable caps allow 60 calls a session: enough sessions that every timed decision is an allow.
    ids = [sessions.start_session(svc, "support-bot", session_key=f"k{i}", environment="live", scenario=None,
                                  twin_snapshot_at=None, now=now).session.id for i in range(sessions_needed)]
    return svc, ids


def _time(decide: Callable[..., object], svc: Services, ids: list[str], count: int) -> list[float]:
    samples = []
    for i in range(count):
        ask = decisions.Ask(ids[i % len(ids)], "search_kb", to_micros(0.0))
        started = time.perf_counter()
        decide(svc, ask, scope="support-bot", now=time.time())
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
        svc, ids = _setup(Path(folder), sessions_needed=3 * per_kind)
        kinds = {RAW: raw_decider(Path(folder) / "bench.db"), BARE: bare_decide, DECIDE: decisions.decide}
        found: dict[str, list[float]] = {name: [] for name in kinds}
        own = {name: ids[n * per_kind:(n + 1) * per_kind] for n, name in enumerate(kinds)}
        for name, decide in kinds.items():
            _time(decide, svc, own[name][:10], 500)  # warm-up: connections, statement cache, policy snapshot
        for part in range(10):  # alternate, so that a noisy neighbour touches every kind alike
            for name, decide in kinds.items():
                found[name] += _time(decide, svc, own[name][10 + part::10], args.decisions // 10)
        svc.db.dispose()
    for name, samples in found.items():
        samples.sort()
        p90, p99 = (samples[int(len(samples) * q)] * 1e6 for q in (0.90, 0.99))
        print(f"{name}: {len(samples)} calls  median {statistics.median(samples) * 1e6:.1f} µs  "
              f"mean {statistics.mean(samples) * 1e6:.1f} µs  p90 {p90:.1f} µs  p99 {p99:.1f} µs")
    median, bare, raw = (statistics.median(found[name]) * 1e6 for name in (DECIDE, BARE, RAW))
    print(f"target median <= {TARGET_US:.0f} µs: {'met' if median <= TARGET_US else 'NOT met'} "
          f"(ratio to target {median / TARGET_US:.2f}; bare transaction {bare / TARGET_US:.2f}, "
          f"on raw sqlite3 {raw / TARGET_US:.2f})")


if __name__ == "__main__":
    main()
