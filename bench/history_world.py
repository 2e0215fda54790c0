"""Build a Gatekeeper SQLite database grown to N decisions, quickly, for `history.py`.

The shape follows the issue's: 10 agents; each day every agent runs one rollout of 6 hours at
canary (a gate evaluation every 30 s, a start and a promotion or rollback transition) and
serves sessions of 10 decisions all day (both arms, ~5,556 decisions a day per agent), with an
approval now and then. The last rollout of each agent is open: it is the one its pages show.
The schema, agents and tokens are made through Gatekeeper itself; history is written with
`executemany` on a raw sqlite3 connection. Built files are kept under the cache folder by size.
"""

from __future__ import annotations

import json
import random
import shutil
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

from gatekeeper import create_app, rollouts
from gatekeeper.services import Services

REPO = Path(__file__).resolve().parent.parent
AGENTS = 10
PER_SESSION = 10
SESSIONS_PER_DAY = 556  # per agent: 10 agents x 5,560 decisions a day
GATE_EVERY_S = 30.0
ROLLOUT_S = 6 * 3600.0
DAY = 86_400.0
BUILD = "v1"  # bump when the shape changes, so cached files are rebuilt
REPORT = json.dumps({"result": "hold", "values": {"sessions": 150, "error_rate": 0.004, "p95_latency_s": 0.8,
                                                  "cost_per_session": 0.05}, "checks": []}, sort_keys=True)


def agent_names() -> list[str]:
    """Return the bench's agent names."""
    return [f"bench-{n:02d}" for n in range(AGENTS)]


def policy_dir(cache: Path) -> Path:
    """Return a folder holding the repository's `support-default` policy bound to the bench's agents."""
    folder = cache / "policies"
    folder.mkdir(parents=True, exist_ok=True)
    text = (REPO / "policies" / "support-default.yaml").read_text()
    (folder / "support-default.yaml").write_text(
        text.replace("agents: [support-bot]", f"agents: [{', '.join(agent_names())}]"))
    return folder


def build(path: Path, decisions: int, *, now: float) -> None:
    """Create `path` with the schema, the agents and `decisions` decisions of history ending at `now`."""
    app = create_app({"database_url": f"sqlite:///{path}", "policy_dir": policy_dir(path.parent)})
    svc: Services = app.extensions["gatekeeper"]
    svc.db.upgrade()
    for name in agent_names():
        rollouts.register_agent(svc, name, policy="support-default", stable_version="v1", now=now)
    svc.db.dispose()
    con = sqlite3.connect(path, isolation_level=None)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=OFF")
    con.execute("BEGIN")
    days = max(1, -(-decisions // (AGENTS * SESSIONS_PER_DAY * PER_SESSION)))
    agent_ids = {name: row[0] for name, row in ((n, con.execute("SELECT id FROM agents WHERE name = ?", (n,))
                                                 .fetchone()) for n in agent_names())}
    rng = random.Random(7)
    left = decisions
    for day in range(days):
        day_start = now - (days - day) * DAY
        for name in agent_names():
            open_one = day == days - 1
            rollout = _rollout(con, agent_ids[name], day_start, open_one=open_one, now=now, version=f"v{day + 2}")
            per_agent = min(left, SESSIONS_PER_DAY * PER_SESSION)
            left -= per_agent
            _traffic(con, agent_ids[name], rollout, day_start, per_agent, rng, name=name, day=day)
        con.execute("COMMIT")
        con.execute("BEGIN")
    con.execute("INSERT OR REPLACE INTO gate_evaluation_counts (agent_id, result, count) "
                "SELECT agent_id, result, count(*) FROM gate_evaluations GROUP BY agent_id, result")
    con.execute("COMMIT")
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()


def _rollout(con: sqlite3.Connection, agent_id: int, day_start: float, *, open_one: bool, now: float,
             version: str) -> tuple[int, float, float]:
    """Insert one rollout with its transitions and gate evaluations; return (id, start, end)."""
    start = day_start + 3600.0
    end = min(start + ROLLOUT_S, now - 60)
    state, ended = ("progressing", None) if open_one else ("completed", end)
    cur = con.execute(
        "INSERT INTO rollouts (agent_id, candidate_version, stable_version, stage, tier, state, state_reason, "
        "tier_started_at, started_at, updated_at, ended_at, policy_revision, kill_switch_open, "
        "consecutive_failures, consecutive_errors) "
        "VALUES (?, ?, 'v1', 'canary', 0, ?, '', ?, ?, ?, ?, 'bench', 0, 0, 0)",
        (agent_id, version, state, start, start, end, ended))
    rollout_id = int(cur.lastrowid or 0)
    transitions = [(rollout_id, agent_id, start, "bench", "start", "canary", 0, "progressing")]
    if not open_one:
        transitions.append((rollout_id, agent_id, end, "scheduler", "promote_full", "canary", 0, "completed"))
    con.executemany("INSERT INTO transitions (rollout_id, agent_id, at, actor, action, reason, to_stage, to_tier, "
                    "to_state, traffic_percent, policy_revision, metrics) VALUES (?, ?, ?, ?, ?, '', ?, ?, ?, 1.0, "
                    "'bench', '{}')", transitions)
    evaluations = int((end - start) // GATE_EVERY_S)
    con.executemany(
        "INSERT INTO gate_evaluations (rollout_id, agent_id, at, stage, tier, window_key, result, report, "
        "policy_revision) VALUES (?, ?, ?, 'canary', 0, ?, 'hold', ?, 'bench')",
        ((rollout_id, agent_id, start + i * GATE_EVERY_S, f"w{i}", REPORT) for i in range(evaluations)))
    if open_one:
        con.execute("UPDATE agents SET rollout_id = ? WHERE id = ?", (rollout_id, agent_id))
    return rollout_id, start, end


def _traffic(con: sqlite3.Connection, agent_id: int, rollout: tuple[int, float, float], day_start: float,
             decisions: int, rng: random.Random, *, name: str, day: int) -> None:
    rollout_id, start, end = rollout
    sessions = -(-decisions // PER_SESSION)
    step = DAY / max(1, sessions)
    session_rows, decision_rows, approvals = [], [], []
    for s in range(sessions):
        began = day_start + s * step
        in_rollout = start <= began < end
        arm = "candidate" if in_rollout and s % 10 == 0 else "stable"
        version = "v1" if arm == "stable" else f"v{day + 2}"
        sid = f"s{agent_id:02d}{day:04d}{s:05d}"
        calls = min(PER_SESSION, decisions - s * PER_SESSION)
        session_rows.append((sid, agent_id, rollout_id if in_rollout else None, version, arm,
                             "canary" if in_rollout else None, f"key-{sid}", calls, calls * 10_000, began,
                             began + 60))
        for c in range(calls):
            at = began + c * 5.0
            error = rng.random() < 0.01
            decision_rows.append((f"d{sid}{c:02d}", sid, agent_id, rollout_id if in_rollout else None, version, arm,
                                  "canary" if in_rollout else None, "search_kb", "read", 10_000, "allow",
                                  '{"query": "where is my parcel"}', at, "error" if error else "ok", 10_000,
                                  rng.lognormvariate(5.7, 0.6), at + 0.4))
        if s % 500 == 250:
            approvals.append((f"a{sid}", agent_id, sid, rollout_id if in_rollout else None, version, began + 10,
                              began + 910, began + 40))
    con.executemany("INSERT INTO sessions (id, agent_id, rollout_id, version, arm, stage, environment, session_key, "
                    "cap_tool_calls, cap_spend_micros, tool_calls, spend_micros, status, started_at, ended_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, 'live', ?, 60, 5000000, ?, ?, 'ok', ?, ?)", session_rows)
    con.executemany("INSERT INTO decisions (id, session_id, agent_id, rollout_id, version, arm, stage, tool, "
                    "tool_class, cost_micros, verdict, reason, arguments, at, outcome_status, actual_cost_micros, "
                    "latency_ms, outcome_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, '', ?, ?, ?, ?, ?, ?)",
                    decision_rows)
    con.executemany("INSERT INTO approvals (id, agent_id, session_id, rollout_id, version, tool, tool_class, "
                    "cost_micros, state, created_at, expires_at, decided_by, decided_at) VALUES "
                    "(?, ?, ?, ?, ?, 'refund', 'write', 0, 'approved', ?, ?, 'alice', ?)",
                    approvals)


def cached(cache: Path, decisions: int) -> tuple[Path, float]:
    """Return a working copy of the database of `decisions` decisions and the time its history ends at."""
    cache.mkdir(parents=True, exist_ok=True)
    source = cache / f"history-{BUILD}-{decisions}.db"
    stamp = source.with_suffix(".json")
    if not source.exists() or not stamp.exists():
        now = time.time()
        started = time.perf_counter()
        partial = source.with_suffix(".partial")
        partial.unlink(missing_ok=True)
        build(partial, decisions, now=now)
        partial.rename(source)
        stamp.write_text(json.dumps({"now": now}))
        print(f"built {source.name} in {time.perf_counter() - started:.0f} s ({source.stat().st_size / 1e6:.0f} MB)",
              flush=True)
    work = cache / f"work-{decisions}.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{work}{suffix}").unlink(missing_ok=True)
    shutil.copyfile(source, work)
    return work, float(json.loads(stamp.read_text())["now"])


def sizes(text: str) -> Iterator[int]:
    """Yield the sizes of a list like `0,200k,1M,5M`."""
    for part in text.split(","):
        part = part.strip().lower()
        scale = 1_000_000 if part.endswith("m") else 1_000 if part.endswith("k") else 1
        yield int(float(part.rstrip("mk")) * scale)


def quantiles(samples: list[float]) -> str:
    """Return the p50, p99 and max of decision latencies in seconds, in milliseconds, with their count."""
    ordered = sorted(samples)
    if not ordered:
        return "none"
    p50, p99 = ordered[len(ordered) // 2], ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return f"p50 {p50 * 1000:.2f} ms, p99 {p99 * 1000:.2f} ms, max {ordered[-1] * 1000:.1f} ms ({len(ordered):,} calls)"


def file_size(path: Path) -> int:
    """Return a file's size in bytes, 0 when it does not exist (a WAL between checkpoints)."""
    return path.stat().st_size if path.exists() else 0
