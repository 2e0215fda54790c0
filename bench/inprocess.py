"""In-process decision benchmark: the core verdict plus one SQLite transaction, no HTTP.

Run: `python bench/inprocess.py [--decisions 20000]`. It builds a real app on a temporary
SQLite file with the repository's policies, registers an agent, opens sessions and times
`gatekeeper.sessions.decide` (what POST /v1/decisions runs after parsing the body).
Target (issue 3): median <= 50 µs. A benchmark, not a test: it prints figures, never fails.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from gatekeeper import create_app, rollouts, sessions
from gatekeeper.core.budgets import to_micros
from gatekeeper.services import Services

REPO = Path(__file__).resolve().parent.parent
TARGET_US = 50.0


def _setup(folder: Path, sessions_needed: int) -> tuple[Services, object, list[str]]:
    app = create_app({"database_url": f"sqlite:///{folder / 'bench.db'}", "policy_dir": REPO / "policies"})
    svc: Services = app.extensions["gatekeeper"]
    svc.db.upgrade()
    now = time.time()
    rollouts.register_agent(svc, "support-bot", policy="support-default", stable_version="v1", now=now)
    # Stable caps allow 60 calls a session: enough sessions that every timed decision is an allow.
    ids = [sessions.start_session(svc, "support-bot", session_key=f"k{i}", environment="live", scenario=None,
                                  twin_snapshot_at=None, now=now).session.id for i in range(sessions_needed)]
    return svc, app.extensions["gatekeeper_hot"], ids


def _time(svc: Services, hot: object, ids: list[str], count: int) -> list[float]:
    samples = []
    for i in range(count):
        ask = sessions.Ask(ids[i % len(ids)], "search_kb", to_micros(0.0))
        started = time.perf_counter()
        sessions.decide(svc, hot, ask, scope="support-bot", now=time.time())  # type: ignore[arg-type]
        samples.append(time.perf_counter() - started)
    return samples


def main() -> None:
    """Print the median, p90 and p99 of in-process decisions."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--decisions", type=int, default=20_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        svc, hot, ids = _setup(Path(folder), sessions_needed=(args.decisions + 500) // 50 + 1)
        _time(svc, hot, ids, 500)  # warm-up: connections, statement cache, policy snapshot
        samples = sorted(_time(svc, hot, ids, args.decisions))
        svc.db.dispose()
    median = statistics.median(samples) * 1e6
    p90, p99 = (samples[int(len(samples) * q)] * 1e6 for q in (0.90, 0.99))
    mean = statistics.mean(samples) * 1e6
    print(f"in-process decisions: {len(samples)}  median {median:.1f} µs  mean {mean:.1f} µs  p90 {p90:.1f} µs  "
          f"p99 {p99:.1f} µs")
    print(f"target median <= {TARGET_US:.0f} µs: {'met' if median <= TARGET_US else 'NOT met'} "
          f"(ratio to target {median / TARGET_US:.2f})")


if __name__ == "__main__":
    main()
