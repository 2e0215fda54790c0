"""Retention: prune sessions, decisions and gate evaluations older than the horizon, in small batches.

Each batch is one short transaction of sessions (with their decisions, rolled up into
`rollout_days` first) or gate evaluations, sized by time: the next batch holds as many as the
last ones' cost per row says fit in HOLD_S (5 ms) of write lock, never more than `batch`
sessions or ten times as many evaluations. Each is followed by a pause as long as it held the
lock, which begins with a PASSIVE checkpoint of the WAL (the batches' connection does not
checkpoint inside its COMMIT: store/retention_records.Batches), so decisions wait at most
~HOLD_S for the write lock and have it at least half the time. (A fixed 100 sessions held it
7-20 ms, up to 80 ms, and put the decisions' p99 beside a prune at ~20 ms.) What an open
rollout's gates judge (its current tier's sessions and evaluations) and every approval's
session are kept; transitions and approvals are never deleted (store/retention_records.py has
the rules). The scheduler's leader prunes once an hour; `gatekeeper db prune` prunes on demand.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from gatekeeper.store import retention_records
from gatekeeper.store.db import Database

log = logging.getLogger(__name__)

PRUNE_EVERY_S = 3600.0
HOLD_S = 0.005  # the write lock one batch aims to hold: a decision waits about this long at worst


@dataclass
class Pruned:
    """What one pass deleted (or, on a dry run, would delete)."""

    sessions: int = 0
    decisions: int = 0
    evaluations: int = 0

    def __str__(self) -> str:
        return f"{self.sessions:,} sessions, {self.decisions:,} decisions, {self.evaluations:,} gate evaluations"


class BatchSize:
    """Size batches by time: as many rows as the recent cost per row says fit in `hold_s`, 1 to `limit`.

    The first batch has one row; a batch at most doubles the last one (a cheap start does not
    promise a cheap row further on) and shrinks at once when the last ones took too long.
    """

    def __init__(self, limit: int, *, hold_s: float) -> None:
        self.limit = max(1, limit)
        self.hold_s = hold_s
        self.size = 1
        self._per_row_s: float | None = None

    def took(self, rows: int, seconds: float) -> None:
        """Learn from a batch of `rows` that held the lock `seconds`; set the next batch's size."""
        if rows < 1:
            return
        cost = seconds / rows
        self._per_row_s = cost if self._per_row_s is None else 0.5 * self._per_row_s + 0.5 * cost
        fits = self.hold_s / self._per_row_s if self._per_row_s > 0 else float(self.limit)
        self.size = max(1, int(min(self.limit, 2 * rows, fits)))


def prune(db: Database, *, older_than_s: float, now: float, batch: int = 100, dry_run: bool = False,
          progress: Callable[[str, Pruned], None] | None = None, hold_s: float = HOLD_S) -> Pruned:
    """Delete (or count, on a dry run) what is older than `now - older_than_s` and unneeded; return the totals."""
    cutoff = now - older_than_s
    total = Pruned()
    sessions, evaluations = BatchSize(batch, hold_s=hold_s), BatchSize(batch * 10, hold_s=hold_s)
    with db.reading() as tx:
        agents = retention_records.agent_ids(db=tx)
    with retention_records.batches(db) as writes:
        for agent_id in agents:
            _prune_sessions(db, writes, agent_id, cutoff=cutoff, size=sessions, dry_run=dry_run, total=total,
                            progress=progress)
            _prune_evaluations(db, writes, agent_id, cutoff=cutoff, size=evaluations, dry_run=dry_run, total=total,
                               progress=progress)
    return total


def _prune_sessions(db: Database, writes: retention_records.Batches, agent_id: int, *, cutoff: float,
                    size: BatchSize, dry_run: bool, total: Pruned, progress: Callable[[str, Pruned], None] | None
                    ) -> None:
    if dry_run:
        with db.reading() as tx:
            found = retention_records.prunable_sessions(agent_id, cutoff=cutoff, limit=2**62, db=tx)
            total.sessions += len(found)
            for start in range(0, len(found), 500):
                total.decisions += retention_records.decision_count(found[start:start + 500], db=tx)
        return
    while True:
        limit = size.size
        started = time.perf_counter()
        with writes.transaction() as tx:
            found = retention_records.prunable_sessions(agent_id, cutoff=cutoff, limit=limit, db=tx)
            retention_records.roll_up(found, db=tx)
            total.decisions += retention_records.delete_sessions(found, db=tx)
        size.took(len(found), _yield_lock(writes, started))
        total.sessions += len(found)
        if progress and found:
            progress("sessions", total)
        if len(found) < limit:
            return


def _prune_evaluations(db: Database, writes: retention_records.Batches, agent_id: int, *, cutoff: float,
                       size: BatchSize, dry_run: bool, total: Pruned, progress: Callable[[str, Pruned], None] | None
                       ) -> None:
    with db.reading() as tx:
        rollout_ids = retention_records.rollouts_with_old_evaluations(agent_id, cutoff=cutoff, db=tx)
    for rollout_id in rollout_ids:
        with db.reading() as tx:  # the chart's sample is chosen once, before any of the rest goes
            found = retention_records.prunable_evaluations(rollout_id, cutoff=cutoff, db=tx)
        if dry_run:
            total.evaluations += len(found)
            continue
        start = 0
        while start < len(found):
            chunk = found[start:start + size.size]
            began = time.perf_counter()
            with writes.transaction() as tx:
                retention_records.delete_evaluations(chunk, db=tx)
            size.took(len(chunk), _yield_lock(writes, began))
            start += len(chunk)
            total.evaluations += len(chunk)
            if progress:
                progress("gate evaluations", total)


def _yield_lock(writes: retention_records.Batches, started: float) -> float:
    """Pause as long as the batch held the write lock (at most a second): writers waiting on it go first.

    The pause begins with the WAL checkpoint (it holds no write lock); return how long the batch held the lock.
    """
    held = time.perf_counter() - started
    writes.checkpoint()
    time.sleep(max(0.0, min(1.0, held) - (time.perf_counter() - started - held)))
    return held


class RetentionJob:
    """The scheduler's pruning pass: at most once every PRUNE_EVERY_S, never raising."""

    def __init__(self, db: Database, *, older_than_s: float, batch: int) -> None:
        self.db = db
        self.older_than_s = older_than_s
        self.batch = batch
        self.last_at = 0.0

    def run_due(self, *, now: float) -> Pruned | None:
        """Prune when an hour has passed since the last pass; return what went, or None when not due or failed."""
        if now - self.last_at < PRUNE_EVERY_S:
            return None
        self.last_at = now
        try:
            pruned = prune(self.db, older_than_s=self.older_than_s, now=now, batch=self.batch)
        except Exception:  # noqa: BLE001 - a failed pass is retried at the next one; gates must go on
            log.exception("retention pass failed")
            return None
        if pruned.sessions or pruned.evaluations:
            log.info("retention pruned %s", pruned)
        return pruned
