"""Retention prunes old sessions, decisions and gate evaluations, never what gates or approvals need."""

from __future__ import annotations

import math
import sqlite3
import time
from contextlib import ExitStack, closing
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from flask import Flask
from flask.testing import FlaskClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text
from sqlmodel import col, select

from gatekeeper import rollouts
from gatekeeper.cli import main
from gatekeeper.metric_sources import InMemorySource
from gatekeeper.retention import BatchSize, RetentionJob, prune
from gatekeeper.scheduler import GateScheduler
from gatekeeper.store import dashboard_records, retention_records, scrape_records
from gatekeeper.store.models import AgentSession, Approval, Decision, GateEvaluation, Rollout, RolloutDay, Transition
from tests.support.app import svc

DAY = 86_400.0
ON_BOTH = pytest.mark.parametrize("db_url", ["sqlite", "postgres"], indirect=True)


def _session(sid: str, *, agent_id: int, rollout_id: int | None, arm: str, started: float) -> AgentSession:
    return AgentSession(id=sid, agent_id=agent_id, rollout_id=rollout_id, version="v1" if arm == "stable" else "v2",
                        arm=arm, stage="canary" if rollout_id else None, environment="live", session_key=sid,
                        cap_tool_calls=60, cap_spend_micros=5_000_000, tool_calls=2, spend_micros=30_000,
                        status="ok", started_at=started, ended_at=started + 60)


def _decisions(sid: str, *, agent_id: int, rollout_id: int | None, arm: str, at: float) -> list[Decision]:
    return [Decision(id=f"{sid}-d{n}", session_id=sid, agent_id=agent_id, rollout_id=rollout_id, version="v1",
                     arm=arm, tool="search_kb", tool_class="read", cost_micros=15_000, verdict="allow", at=at + n,
                     outcome_status="error" if n == 0 else "ok", actual_cost_micros=15_000, latency_ms=200.0,
                     outcome_at=at + n + 1) for n in range(2)]


def _rollout(agent_id: int, *, state: str, started: float, tier_started: float) -> Rollout:
    return Rollout(agent_id=agent_id, candidate_version="v2", stable_version="v1", stage="canary", tier=0,
                   state=state, tier_started_at=tier_started, started_at=started, updated_at=tier_started,
                   ended_at=None if state == "progressing" else tier_started + DAY, policy_revision="r")


def _evaluation(rollout_id: int, agent_id: int, at: float, key: str) -> GateEvaluation:
    return GateEvaluation(rollout_id=rollout_id, agent_id=agent_id, at=at, stage="canary", tier=0, window_key=key,
                          result="hold", report="{}", policy_revision="r")


def _seed(app: Flask, now: float) -> dict[str, Any]:
    """An agent whose open rollout's tier began 40 days ago, an old finished rollout, approvals, and fresh traffic."""
    service = svc(app)
    agent = rollouts.register_agent(service, "support-bot", policy="support-default", stable_version="v1", now=now)
    agent_id = agent.id or 0
    with service.db.transaction() as db:
        closed = _rollout(agent_id, state="completed", started=now - 70 * DAY, tier_started=now - 70 * DAY)
        open_ = _rollout(agent_id, state="progressing", started=now - 45 * DAY, tier_started=now - 40 * DAY)
        db.add_all([closed, open_])
        db.flush()
        ids = {"closed": closed.id or 0, "open": open_.id or 0}
        db.execute(text("UPDATE agents SET rollout_id = :r WHERE id = :a"), {"r": ids["open"], "a": agent_id})
        for rid in ids.values():
            db.add(Transition(rollout_id=rid, agent_id=agent_id, at=now - 70 * DAY, actor="t", action="start",
                              to_stage="canary", to_tier=0, to_state="progressing", policy_revision="r"))
        sessions = {  # id: (rollout, arm, age in days)
            "old-closed": (ids["closed"], "candidate", 60), "old-closed-stable": (ids["closed"], "stable", 60),
            "approved": (ids["closed"], "stable", 60), "pending": (None, "stable", 50),
            "open-before-tier": (ids["open"], "candidate", 42), "open-in-tier": (ids["open"], "candidate", 35),
            "open-in-tier-stable": (ids["open"], "stable", 35), "no-rollout-old": (None, "stable", 31),
            "fresh": (None, "stable", 1)}
        for sid, (rid, arm, age) in sessions.items():
            db.add(_session(sid, agent_id=agent_id, rollout_id=rid, arm=arm, started=now - age * DAY))
        db.flush()
        for sid, (rid, arm, age) in sessions.items():
            db.add_all(_decisions(sid, agent_id=agent_id, rollout_id=rid, arm=arm, at=now - age * DAY))
        for aid, sid, state, expires in (("ap-done", "approved", "approved", now - 59 * DAY),
                                         ("ap-pending", "pending", "pending", now + 3600)):
            db.add(Approval(id=aid, agent_id=agent_id, session_id=sid, version="v1", tool="refund", tool_class="write",
                            cost_micros=0, state=state, created_at=now - 60 * DAY, expires_at=expires))
        # Every 20 minutes: the closed rollout 60 to 50 days ago; the open one 45 to 41 days ago (before its
        # tier), 40 to 31 days ago (its tier, older than the horizon), and yesterday.
        evaluations = [(ids["closed"], now - 60 * DAY + n * 1200, f"c{n}") for n in range(720)]
        evaluations += [(ids["open"], now - 45 * DAY + n * 1200, f"before{n}") for n in range(288)]
        evaluations += [(ids["open"], now - 40 * DAY + n * 1200, f"tier{n}") for n in range(648)]
        evaluations += [(ids["open"], now - DAY, "fresh")]
        db.add_all([_evaluation(rid, agent_id, at, key) for rid, at, key in evaluations])
        scrape_records.count_evaluations([(agent_id, "hold")] * len(evaluations), db=db)
    return {"agent_id": agent_id, **ids}


def _charted(app: Flask, *rollout_ids: int) -> set[str]:
    """Return the window keys of the evaluations these rollouts' charts show now."""
    with svc(app).db.reading() as db:
        ids = {i for rid in rollout_ids for i in dashboard_records.charted_evaluations(rid, db=db)}
        return {e.window_key for e in db.exec(select(GateEvaluation).where(col(GateEvaluation.id).in_(ids)))}


def _kept(app: Flask) -> tuple[set[str], set[str], set[str], int, int]:
    with svc(app).db.reading() as db:
        sessions = set(db.exec(select(AgentSession.id)))
        decisions = {d.split("-d")[0] for d in db.exec(select(Decision.id))}
        evaluations = set(db.exec(select(GateEvaluation.window_key)))
        transitions = len(db.exec(select(Transition.id)).all())
        approvals = len(db.exec(select(Approval.id)).all())
    return sessions, decisions, evaluations, transitions, approvals


KEPT = {"approved", "pending", "open-in-tier", "open-in-tier-stable", "fresh"}


@ON_BOTH
def test_pruning_keeps_what_open_gates_and_approvals_need_and_rolls_up_the_rest(app: Flask, client: FlaskClient
                                                                                ) -> None:
    now = time.time()
    ids = _seed(app, now)
    charted = _charted(app, ids["closed"], ids["open"])
    assert 300 < len(charted) <= 802
    prunable = {f"c{n}" for n in range(720)} | {f"before{n}" for n in range(288)}
    dry = prune(svc(app).db, older_than_s=30 * DAY, now=now, batch=2, dry_run=True)
    assert (dry.sessions, dry.decisions, dry.evaluations) == (4, 8, len(prunable - charted))
    assert _kept(app)[0] == KEPT | {"old-closed", "old-closed-stable", "open-before-tier", "no-rollout-old"}
    lines: list[str] = []
    done = prune(svc(app).db, older_than_s=30 * DAY, now=now, batch=2, progress=lambda what, t: lines.append(what),
                 hold_s=math.inf)
    assert (done.sessions, done.decisions, done.evaluations) == (4, 8, len(prunable - charted))
    assert lines.count("sessions") == 3  # 1, 2 (the limit), then the last one: one transaction each
    sessions, decisions, evaluations, transitions, approvals = _kept(app)
    assert sessions == decisions == KEPT
    # The open rollout's current tier is kept whole; of the rest, what the charts show.
    assert evaluations == {f"tier{n}" for n in range(648)} | {"fresh"} | (prunable & charted)
    assert _charted(app, ids["closed"]) <= charted
    assert (transitions, approvals) == (2, 2)
    with svc(app).db.reading() as db:
        days = {(d.rollout_id, d.arm): (d.sessions, d.decisions, d.errors, d.spend_micros)
                for d in db.exec(select(RolloutDay))}
    assert days == {(ids["closed"], "candidate"): (1, 2, 1, 30_000), (ids["closed"], "stable"): (1, 2, 1, 30_000),
                    (ids["open"], "candidate"): (1, 2, 1, 30_000), (0, "stable"): (1, 2, 1, 30_000)}
    # Counters never fall: /metrics still counts every evaluation ever stored.
    families = {f.name: f for f in text_string_to_metric_families(client.get("/metrics").get_data(as_text=True))}
    counted = {s.labels["result"]: s.value for s in families["gatekeeper_gate_evaluations"].samples
               if s.name.endswith("_total")}
    assert counted == {"hold": 720 + 288 + 648 + 1.0}
    again = prune(svc(app).db, older_than_s=30 * DAY, now=now, batch=2)
    assert (again.sessions, again.evaluations) == (0, 0)


def test_batches_are_sized_by_the_time_they_hold_the_lock() -> None:
    size = BatchSize(100, hold_s=0.005)
    assert size.size == 1
    grown = []
    for _ in range(8):  # 0.1 ms a row: 50 would fit, but a batch at most doubles the last
        size.took(size.size, size.size * 0.0001)
        grown.append(size.size)
    assert grown == [2, 4, 8, 16, 32, 50, 50, 50]
    size.took(50, 0.05)  # ten times slower: the next batch shrinks at once (halfway, the cost is averaged)
    assert size.size == 9
    size.took(9, 10.0)
    assert size.size == 1
    size.took(0, 0.0)  # an empty batch teaches nothing
    assert size.size == 1
    capped = BatchSize(3, hold_s=1.0)
    for _ in range(4):
        capped.took(capped.size, 0.0)
    assert capped.size == 3


@ON_BOTH
def test_a_slow_prune_goes_one_session_at_a_time_and_a_fast_one_grows_to_the_limit(app: Flask) -> None:
    now = time.time()
    _seed(app, now)
    slow: list[int] = []
    done = prune(svc(app).db, older_than_s=30 * DAY, now=now, batch=100, hold_s=0.0,
                 progress=lambda what, t: slow.append(t.sessions) if what == "sessions" else None)
    assert done.sessions == 4 and slow == [1, 2, 3, 4]
    again = _seed_more(app, now)
    fast: list[int] = []
    prune(svc(app).db, older_than_s=30 * DAY, now=now, batch=4, hold_s=math.inf,
          progress=lambda what, t: fast.append(t.sessions) if what == "sessions" else None)
    assert fast == [1, 3, 7, 11, again], fast  # 1, 2, 4, then the limit of 4 per batch


def _seed_more(app: Flask, now: float) -> int:
    """Add 12 old sessions with no rollout to the seeded agent; return how many sessions are prunable."""
    with svc(app).db.transaction() as db:
        agent_id = int(db.execute(text("SELECT id FROM agents")).scalar_one())
        for n in range(12):
            db.add(_session(f"more{n}", agent_id=agent_id, rollout_id=None, arm="stable", started=now - 40 * DAY + n))
    return 12


def test_the_write_lock_is_free_between_two_batches(app: Flask) -> None:
    now = time.time()
    _seed(app, now)
    _seed_more(app, now)
    path = svc(app).settings.database_url.split("///", 1)[1]
    taken: list[str] = []

    def decide_between(what: str, _total: object) -> None:
        with closing(sqlite3.connect(path, timeout=0, isolation_level=None)) as other:
            other.execute("BEGIN IMMEDIATE")  # raises "database is locked" if a batch still held it
            other.execute("ROLLBACK")
        taken.append(what)

    done = prune(svc(app).db, older_than_s=30 * DAY, now=now, batch=4, hold_s=math.inf, progress=decide_between)
    assert done.sessions == 16 and taken.count("sessions") == 6 and "gate evaluations" in taken


def test_pruning_hands_its_connection_back_with_the_automatic_checkpoint_as_it_was(app: Flask,
                                                                                  monkeypatch: pytest.MonkeyPatch
                                                                                  ) -> None:
    now = time.time()
    _seed(app, now)
    database = svc(app).db

    def autocheckpoint() -> set[int]:
        """Return the setting of every connection idle in the pool (all checked out at once)."""
        with ExitStack() as stack:
            idle = [stack.enter_context(database.engine.connect()) for _ in range(database.engine.pool.checkedin())]
            return {int(c.connection.driver_connection.execute("PRAGMA wal_autocheckpoint").fetchone()[0])
                    for c in idle}

    assert autocheckpoint() == {1000}
    assert prune(database, older_than_s=30 * DAY, now=now, batch=100).sessions == 4
    assert autocheckpoint() == {1000}
    _seed_more(app, now)
    monkeypatch.setattr(retention_records, "delete_sessions", lambda *a, **k: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        prune(database, older_than_s=30 * DAY, now=now, batch=100)
    assert autocheckpoint() == {1000}  # a failed pass restores it too
    assert len(_kept(app)[0]) == len(KEPT) + 12  # and its batch was rolled back


def test_the_command_prunes_in_batches_with_progress_and_dry_runs(app: Flask, db_url: str) -> None:
    now = time.time()
    ids = _seed(app, now)
    gone = 720 + 288 - len(_charted(app, ids["closed"]) | {k for k in _charted(app, ids["open"]) if "before" in k})
    runner = CliRunner()
    env = {"GATEKEEPER_RETENTION_BATCH": "1"}
    dry = runner.invoke(main, ["db", "prune", "--older-than", "30d", "--dry-run", "--db", db_url], env=env)
    assert dry.exit_code == 0, dry.output
    assert dry.output.strip().endswith(f"would prune 4 sessions, 8 decisions, {gone:,} gate evaluations older than "
                                       "30 days")
    assert len(_kept(app)[0]) == 9
    done = runner.invoke(main, ["db", "prune", "--older-than", "30d", "--db", db_url], env=env)
    assert done.exit_code == 0, done.output
    assert done.output.count("pruning sessions:") == 4
    assert f"pruned 4 sessions, 8 decisions, {gone:,} gate evaluations older than 30 days" in done.output
    assert _kept(app)[0] == KEPT
    refused = runner.invoke(main, ["db", "prune", "--older-than", "2h", "--db", db_url])
    assert refused.exit_code != 0 and "at least 1d" in refused.output


def test_the_scheduler_pass_prunes_at_most_once_an_hour(app: Flask) -> None:
    now = time.time()
    _seed(app, now)
    job = RetentionJob(svc(app).db, older_than_s=30 * DAY, batch=200)
    first = job.run_due(now=now)
    assert first is not None and first.sessions == 4
    assert job.run_due(now=now + 60) is None
    later = job.run_due(now=now + 3601)
    assert later is not None and later.sessions == 0


def test_only_the_leading_scheduler_prunes(app: Flask) -> None:
    now = time.time()
    _seed(app, now)
    scheduler = GateScheduler(svc(app), InMemorySource(), interval_s=1.0, clock=lambda: now)
    try:
        scheduler.prune()  # not leading yet
        assert len(_kept(app)[0]) == 9
        assert scheduler.tick().leader
        scheduler.prune()
        assert _kept(app)[0] == KEPT
    finally:
        scheduler.lease.release()


def test_disk_stays_bounded_under_a_steady_load_with_daily_pruning(app: Flask) -> None:
    service = svc(app)
    agent = rollouts.register_agent(service, "support-bot", policy="support-default", stable_version="v1",
                                    now=time.time())
    path = Path(service.settings.database_url.split("///", 1)[1])
    start, sizes = time.time() - 20 * DAY, []
    for day in range(12):  # 300 sessions of 2 decisions a day, 3 days kept
        at = start + day * DAY
        with service.db.transaction() as db:
            for s in range(300):
                sid = f"d{day}s{s}"
                db.add(_session(sid, agent_id=agent.id or 0, rollout_id=None, arm="stable", started=at + s))
                db.flush()
                db.add_all(_decisions(sid, agent_id=agent.id or 0, rollout_id=None, arm="stable", at=at + s))
        prune(service.db, older_than_s=3 * DAY, now=at + DAY / 2, batch=200)
        with closing(sqlite3.connect(path)) as raw:
            raw.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        sizes.append(path.stat().st_size)
    assert sizes[-1] <= sizes[5] * 1.05, sizes  # free pages are reused: the file stops growing
    assert sizes[-1] < sizes[2] * 1.6, sizes
