"""Disk under a steady load: decisions at a steady rate and a prune pass every period; the file stays flat.

`python bench/history.py --steady [--sizes 500k] [--rate 300] [--period 10] [--passes 8]` copies
the cached database of that many decisions (D days of history) and keeps D days: the bench
process decides through the real app at `--rate` a second, and every `--period` seconds a
pruning subprocess (started once) runs one retention pass (`gatekeeper.retention.prune`, as the
scheduler and `gatekeeper db prune` do) with its clock moved on by as much history as the bench
inserted meanwhile (time is compressed: a pass deletes the oldest period's worth of the world's
~55,600 decisions a day, about what was just inserted). Each pass prints what it deleted and how
fast, the insert rate, the file and WAL size and the decisions' latency during the passes and
between them. The file must stay flat once the first pass has freed pages: SQLite reuses them.
A benchmark: it never fails.
"""

from __future__ import annotations

import json
import os
import select
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import history_world as world

from gatekeeper.retention import prune
from gatekeeper.store.db import Database

REPO = Path(__file__).resolve().parent.parent
PER_DAY = world.AGENTS * world.SESSIONS_PER_DAY * world.PER_SESSION  # the built history's decisions a day


def run(*, size: int, rate: float, period_s: float, passes: int, cache: Path, world_type: type) -> None:
    """Decide at `rate` a second and prune every `period_s`, `passes` times; print each pass and the file size."""
    path, built_at = world.cached(cache, size)
    days = max(1, -(-size // PER_DAY))
    horizon = days * world.DAY  # nothing is older at the first pass: later passes delete what the clock moved over
    one = world_type(path, built_at=built_at, cache=cache)
    print(f"steady load on {size:,} decisions ({days} days kept, {_file_mb(path):.0f} MB, "
          f"{_file_mb(path) * 1e6 / size:.0f} bytes per decision): {rate:g} decisions/s, a prune pass every "
          f"{period_s:g} s", flush=True)
    during: list[float] = []
    between: list[float] = []
    virtual, decided, sizes = built_at, 0, []
    pruner = subprocess.Popen([sys.executable, __file__, str(path), str(horizon)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, bufsize=1,
                              env={**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "bench")])})
    assert pruner.stdin and pruner.stdout
    pruner.stdout.readline()  # ready: imported and connected, so passes time pruning only
    for number in range(passes):
        started = time.perf_counter()
        virtual += decided / PER_DAY * world.DAY  # the pass deletes about as much old history as was just added
        pruner.stdin.write(f"{virtual}\n")
        decided, answer = 0, ""
        while not answer or time.perf_counter() - started < period_s:
            late = started + decided / rate - time.perf_counter()
            if late > 0:
                time.sleep(late)
            began = time.perf_counter()
            one.decide()
            (between if answer else during).append(time.perf_counter() - began)
            decided += 1
            if not answer and select.select([pruner.stdout], [], [], 0)[0]:
                answer = pruner.stdout.readline()
        got = json.loads(answer)
        wall = time.perf_counter() - started
        pages, free, page = _pages(path)
        sizes.append(path.stat().st_size)
        print(f"pass {number + 1}: pruned {got['decisions']:,} decisions in {got['seconds']:.2f} s "
              f"({got['decisions'] / max(got['seconds'], 1e-9):,.0f}/s while pruning); inserted {decided:,} in "
              f"{wall:.1f} s ({decided / wall:,.0f}/s); file {sizes[-1] / 1e6:.1f} MB ({free * page / 1e6:.1f} MB "
              f"free pages), WAL {world.file_size(Path(f'{path}-wal')) / 1e6:.1f} MB", flush=True)
    pruner.stdin.close()
    pruner.wait(timeout=60)
    one.svc.db.dispose()
    print(f"  decide during the passes: {world.quantiles(during)}; between them: {world.quantiles(between)}")
    print(f"  file over the passes: {' -> '.join(f'{s / 1e6:.1f}' for s in sizes)} MB; from pass 2 to the last "
          f"{(sizes[-1] - sizes[1]) / 1e6:+.2f} MB while {(passes - 2) * rate * period_s:,.0f} decisions "
          f"(~{(passes - 2) * rate * period_s * sizes[0] / size / 1e6:.1f} MB) went in")


def _pages(path: Path) -> tuple[int, int, int]:
    con = sqlite3.connect(path)
    try:
        pages, free, page = (con.execute(f"PRAGMA {p}").fetchone()[0] for p in ("page_count", "freelist_count",
                                                                                "page_size"))
    finally:
        con.close()
    return int(pages), int(free), int(page)


def _file_mb(path: Path) -> float:
    return path.stat().st_size / 1e6


def _passes(path: str, horizon: float) -> None:
    """Say ready, then for each clock read from stdin run one retention pass and print what it deleted as JSON."""
    database = Database(f"sqlite:///{path}")
    print("ready", flush=True)
    try:
        for line in sys.stdin:
            started = time.perf_counter()
            got = prune(database, older_than_s=horizon, now=float(line))
            print(json.dumps({"decisions": got.decisions, "sessions": got.sessions,
                              "seconds": time.perf_counter() - started}), flush=True)
    finally:
        database.dispose()


if __name__ == "__main__":
    _passes(sys.argv[1], float(sys.argv[2]))
