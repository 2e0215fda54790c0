"""Read paths against months of history: each one's median at N decisions beside the empty database.

Run: `python bench/history.py [--sizes 0,200k] [--rounds 5] [--cache .bench-cache]` (the issue's
table: `--sizes 0,1M,5M`; `--steady --sizes 500k`: disk under a steady load, history_steady.py).
Databases are built once by `history_world.py` and cached. Then, in alternating rounds, the real
app answers in-process (Flask's test client) against each database:
decide, outcome, the built-in gate source for the 10 open rollouts, an agent's history, the
agent list, the dashboard's overview and agent page, and /metrics; each median is printed
beside the empty database's with the ratio (target: every read path <= 1.5x). Then a worker's
peak resident memory serving every read path (a subprocess per database), and the disk size
before and after `gatekeeper db prune`. A benchmark, not a test: it prints figures, never fails.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import history_steady
import history_world as world
from flask.testing import FlaskClient
from sqlalchemy import text

from gatekeeper import create_app
from gatekeeper.metric_sources import BuiltinSource
from gatekeeper.services import Services
from gatekeeper.store.tokens import create_token, create_user
from gatekeeper.tier_signals import SignalRequest

REPO = Path(__file__).resolve().parent.parent
READS = ("gate source, 10 rollouts", "GET /v1/agents/{a}/history", "GET /v1/agents", "dashboard overview",
         "agent page", "GET /metrics")
WRITES = ("decide", "outcome")
PASSWORD = "bench-password-1"


class World:
    """One database opened by the real app, with a token, a signed-in dashboard client and open sessions."""

    def __init__(self, path: Path, *, built_at: float, cache: Path) -> None:
        self.app = create_app({"database_url": f"sqlite:///{path}", "policy_dir": world.policy_dir(cache)})
        self.svc: Services = self.app.extensions["gatekeeper"]
        self.svc.db.upgrade()
        self.built_at = built_at
        now = time.time()
        self.user = f"bench-{os.getpid()}-{id(self)}"
        with self.svc.db.transaction() as db:
            self.token, _ = create_token("bench", role="release_manager", agent=None, now=now, db=db)
            runtime, _ = create_token("bench-agent", role="agent", agent=world.agent_names()[0], now=now, db=db)
            create_user(self.user, password=PASSWORD, role="viewer", now=now, db=db)
        self.api = self.app.test_client()
        self.auth = {"Authorization": f"Bearer {self.token}"}
        self.runtime = {"Authorization": f"Bearer {runtime}"}
        self.page = self.app.test_client()
        self.page.post("/login", data={"username": self.user, "password": PASSWORD,
                                       "csrf_token": _csrf(self.page.get("/login").get_data(as_text=True))})
        self.agent = world.agent_names()[0]
        self.sessions = [self._session() for _ in range(5)]
        self.decided: list[str] = []
        self.calls = 0

    def _session(self) -> str:
        answer = self._post("/v1/sessions", {"agent": self.agent})
        return str(answer["session_id"])

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        response = self.api.post(path, json=body, headers=self.runtime)
        assert response.status_code in (200, 201), response.get_data(as_text=True)
        return dict(response.get_json())

    def decide(self) -> None:
        """Ask one allowed call (a fresh session every 40 calls, inside the caps)."""
        self.calls += 1
        if self.calls % 40 == 0:
            self.sessions[self.calls // 40 % len(self.sessions)] = self._session()
        answer = self._post("/v1/decisions", {"session_id": self.sessions[self.calls % len(self.sessions)],
                                              "tool": "search_kb", "cost": 0.0})
        self.decided.append(str(answer["decision_id"]))

    def outcome(self) -> None:
        """Report the outcome of one decided call."""
        if not self.decided:
            self.decide()
        self._post(f"/v1/decisions/{self.decided.pop()}/outcome", {"status": "ok", "latency_ms": 120.0})

    def gate_source(self) -> None:
        """Ask the built-in source for every open rollout's tier signals, as one gate cycle does."""
        with self.svc.db.reading() as db:
            rows = db.exec(_OPEN).all()  # type: ignore[call-overload]
        requests = [SignalRequest(name, version, rid, window_s=600.0, tier_started_at=started)
                    for name, version, rid, started in rows]
        BuiltinSource(self.svc.db).tier_signals(requests, now=self.built_at)

    def get(self, client: FlaskClient, path: str) -> None:
        """GET a path; it must answer 200."""
        response = client.get(path, headers=self.auth if client is self.api else {})
        assert response.status_code == 200, (path, response.status_code)

    def operations(self) -> dict[str, Callable[[], None]]:
        """Return every timed operation by name."""
        return {"decide": self.decide, "outcome": self.outcome, "gate source, 10 rollouts": self.gate_source,
                "GET /v1/agents/{a}/history": lambda: self.get(self.api, f"/v1/agents/{self.agent}/history"),
                "GET /v1/agents": lambda: self.get(self.api, "/v1/agents"),
                "dashboard overview": lambda: self.get(self.page, "/"),
                "agent page": lambda: self.get(self.page, f"/agents/{self.agent}"),
                "GET /metrics": lambda: self.get(self.api, "/metrics")}


def _csrf(html: str) -> str:
    marker = 'name="csrf-token" content="'
    start = html.index(marker) + len(marker)
    return html[start:html.index('"', start)]


_OPEN = text("SELECT a.name, r.candidate_version, r.id, r.tier_started_at FROM agents a "
             "JOIN rollouts r ON r.id = a.rollout_id")


def _timed(operation: Callable[[], None], repeats: int) -> list[float]:
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        operation()
        samples.append(time.perf_counter() - started)
    return samples


def measure(worlds: dict[int, World], *, rounds: int, repeats: int) -> dict[tuple[int, str], list[float]]:
    """Time every operation against every database, alternating databases within each round."""
    found: dict[tuple[int, str], list[float]] = {}
    for one in worlds.values():
        for operation in one.operations().values():
            _timed(operation, 2)  # warm-up: caches, compiled statements, the page cache
    for _ in range(rounds):
        for name in (*WRITES, *READS):
            for size, one in worlds.items():
                found.setdefault((size, name), []).extend(_timed(one.operations()[name], repeats))
    return found


def peak_rss(path: Path, *, built_at: float, cache: Path) -> tuple[int, int, int]:
    """Return a fresh process's peak resident KB, and its resident KB before and after serving every read path."""
    out = subprocess.run([sys.executable, __file__, "--rss-child", str(path), "--built-at", str(built_at),
                          "--cache", str(cache)], capture_output=True, text=True, check=True, timeout=900,
                         env={**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "bench")])})
    peak, before, after = out.stdout.strip().splitlines()[-1].split()
    return int(peak), int(before), int(after)


def _rss_child(path: Path, *, built_at: float, cache: Path) -> None:
    one = World(path, built_at=built_at, cache=cache)
    before = _resident_kb()
    operations = one.operations()
    for _ in range(20):
        for name in READS:
            operations[name]()
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, before, _resident_kb())


def _resident_kb() -> int:
    """Return this process's resident memory now (VmRSS), in KB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


@dataclass
class PruneFigures:
    """Disk before and after a prune, its time, and decisions timed beside it."""

    before: int
    live_after: int
    file_after: int
    seconds: float
    batches: int
    idle: list[float]
    during: list[float]


def prune_figures(path: Path, *, older_than: str, built_at: float, cache: Path) -> PruneFigures:
    """Run `gatekeeper db prune` on the working copy while this process keeps deciding on the same file."""
    before = path.stat().st_size + world.file_size(Path(f"{path}-wal"))
    one = World(path, built_at=built_at, cache=cache)
    idle = _timed(one.decide, 300)
    started = time.perf_counter()
    # The progress lines go to a file: a pipe nobody reads until the end fills after ~800 batches and
    # the pruner blocks on its next line for good (a 5M prune "beside decisions" never ended that way).
    with tempfile.TemporaryFile("w+") as log, subprocess.Popen(
            [sys.executable, "-m", "gatekeeper.cli", "db", "prune", "--older-than", older_than, "--db",
             f"sqlite:///{path}"], stdout=log, stderr=subprocess.STDOUT, text=True,
            env={**os.environ, "PYTHONPATH": str(REPO)}) as pruning:
        during: list[float] = []
        while pruning.poll() is None:
            during += _timed(one.decide, 20)
            time.sleep(0.01)  # an agent's pace, not a flood: the pruner must progress too
        log.seek(0)
        output = log.read()
    seconds = time.perf_counter() - started
    if pruning.returncode != 0:
        raise SystemExit(output)
    one.svc.db.dispose()
    con = sqlite3.connect(path)
    pages, free, size = (con.execute(f"PRAGMA {p}").fetchone()[0] for p in ("page_count", "freelist_count",
                                                                             "page_size"))
    con.close()
    wal = world.file_size(Path(f"{path}-wal"))
    return PruneFigures(before, (pages - free) * size, path.stat().st_size + wal, seconds, output.count("pruning "),
                        idle, during)


def main() -> None:
    """Print every operation's median per database size with its ratio to the empty one, memory and disk."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="0,200k", help="decisions in each database, e.g. 0,1M,5M")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=5, help="calls of each operation per round and database")
    parser.add_argument("--cache", type=Path, default=REPO / ".bench-cache")
    parser.add_argument("--no-prune", action="store_true", help="skip the pruning figures")
    parser.add_argument("--older-than", default="30d", help="the horizon `gatekeeper db prune` is run with")
    parser.add_argument("--steady", action="store_true", help="only the steady-load disk figures (history_steady.py) "
                        "on the largest of --sizes")
    parser.add_argument("--rate", type=float, default=300.0, help="--steady: decisions a second")
    parser.add_argument("--period", type=float, default=10.0, help="--steady: seconds between prune passes")
    parser.add_argument("--passes", type=int, default=8, help="--steady: prune passes")
    parser.add_argument("--rss-child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--built-at", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rss_child:
        _rss_child(args.rss_child, built_at=args.built_at, cache=args.cache)
        return
    sizes = sorted(set(world.sizes(args.sizes)) | {0})
    if args.steady:
        history_steady.run(size=sizes[-1], rate=args.rate, period_s=args.period, passes=args.passes,
                           cache=args.cache, world_type=World)
        return
    paths = {size: world.cached(args.cache, size) for size in sizes}
    worlds = {size: World(path, built_at=built_at, cache=args.cache) for size, (path, built_at) in paths.items()}
    found = measure(worlds, rounds=args.rounds, repeats=args.repeats)
    _table(found, sizes)
    for one in worlds.values():
        one.svc.db.dispose()
    rss = {size: peak_rss(path, built_at=built_at, cache=args.cache) for size, (path, built_at) in paths.items()}
    for size in sizes:
        (peak, before, after), base = rss[size], rss[0][0]
        print(f"peak RSS serving every read path at {size:,} decisions: {peak / 1024:.1f} MB "
              f"({peak / base:.2f}x the empty database; target <= 1.2x); resident {before / 1024:.1f} MB before "
              f"the first read, {after / 1024:.1f} MB after 20 rounds of every read path")
    if not args.no_prune:
        for size in sizes[1:]:
            path, built_at = paths[size]
            got = prune_figures(path, older_than=args.older_than, built_at=built_at, cache=args.cache)
            print(f"prune --older-than {args.older_than} at {size:,} decisions: {got.before / 1e6:.0f} MB before "
                  f"({got.before / max(1, size):.0f} bytes per decision), {got.live_after / 1e6:.0f} MB in use after "
                  f"({got.file_after / 1e6:.0f} MB file: freed pages are reused), {got.seconds:.0f} s in "
                  f"{got.batches:,} batches")
            print(f"  decide beside it: idle {world.quantiles(got.idle)}; "
                  f"during the prune {world.quantiles(got.during)}")
    print(json.dumps({"sizes": sizes}))


def _table(found: dict[tuple[int, str], list[float]], sizes: list[int]) -> None:
    """Print medians (with their interquartile spread) and ratios to the empty and to the smallest grown database."""
    grown = sizes[1:]
    head = " | ".join(f"{size:,} decisions" if size else "empty" for size in sizes)
    ratios = [f"ratio {size:,} / empty" for size in grown]
    ratios += [f"ratio {size:,} / {grown[0]:,}" for size in grown[1:]]
    print(f"| operation | {head} | " + " | ".join(ratios) + " |")
    print("|---" * (1 + len(sizes) + len(ratios)) + "|")
    for name in (*WRITES, *READS):
        medians = [statistics.median(found[(size, name)]) * 1000 for size in sizes]
        spreads = [_spread(found[(size, name)]) for size in sizes]
        cells = " | ".join(f"{m:.2f} ms (±{s:.0f}%)" for m, s in zip(medians, spreads, strict=True))
        ratio = [f"{m / medians[0]:.2f}x" for m in medians[1:]] + [f"{m / medians[1]:.2f}x" for m in medians[2:]]
        print(f"| {name} | {cells} | {' | '.join(ratio)} |", flush=True)


def _spread(samples: list[float]) -> float:
    """Return the interquartile range as a percentage of the median."""
    ordered = sorted(samples)
    q1, q3 = ordered[len(ordered) // 4], ordered[3 * len(ordered) // 4]
    return 100 * (q3 - q1) / statistics.median(ordered)


if __name__ == "__main__":
    main()
