"""Retention: prune sessions, decisions and gate evaluations older than the horizon, in small batches.

Each batch is one short transaction of at most `batch` sessions (with their decisions, rolled
up into `rollout_days` first) or ten times `batch` gate evaluations, followed by a pause as long
as the batch took, so decisions wait at most one batch for the write lock and always get it
between two batches. What an open rollout's gates judge (its current tier's sessions and
evaluations) and every approval's session are kept; transitions and approvals are never
deleted (store/retention_records.py has the rules). The scheduler's leader prunes once an hour;
`gatekeeper db prune` prunes on demand.
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


@dataclass
class Pruned:
    """What one pass deleted (or, on a dry run, would delete)."""

    sessions: int = 0
    decisions: int = 0
    evaluations: int = 0

    def __str__(self) -> str:
        return f"{self.sessions:,} sessions, {self.decisions:,} decisions, {self.evaluations:,} gate evaluations"


def prune(db: Database, *, older_than_s: float, now: float, batch: int = 100, dry_run: bool = False,
          progress: Callable[[str, Pruned], None] | None = None) -> Pruned:
    """Delete (or count, on a dry run) what is older than `now - older_than_s` and unneeded; return the totals."""
    cutoff = now - older_than_s
    total = Pruned()
    with db.reading() as tx:
        agents = retention_records.agent_ids(db=tx)
    for agent_id in agents:
        _prune_sessions(db, agent_id, cutoff=cutoff, batch=batch, dry_run=dry_run, total=total, progress=progress)
        _prune_evaluations(db, agent_id, cutoff=cutoff, batch=batch, dry_run=dry_run, total=total, progress=progress)
    return total


def _prune_sessions(db: Database, agent_id: int, *, cutoff: float, batch: int, dry_run: bool, total: Pruned,
                    progress: Callable[[str, Pruned], None] | None) -> None:
    if dry_run:
        with db.reading() as tx:
            found = retention_records.prunable_sessions(agent_id, cutoff=cutoff, limit=2**62, db=tx)
            total.sessions += len(found)
            for start in range(0, len(found), 500):
                total.decisions += retention_records.decision_count(found[start:start + 500], db=tx)
        return
    while True:
        started = time.perf_counter()
        with db.transaction() as tx:
            found = retention_records.prunable_sessions(agent_id, cutoff=cutoff, limit=batch, db=tx)
            retention_records.roll_up(found, db=tx)
            total.decisions += retention_records.delete_sessions(found, db=tx)
        _yield_lock(started)
        total.sessions += len(found)
        if progress and found:
            progress("sessions", total)
        if len(found) < batch:
            return


def _prune_evaluations(db: Database, agent_id: int, *, cutoff: float, batch: int, dry_run: bool, total: Pruned,
                       progress: Callable[[str, Pruned], None] | None) -> None:
    with db.reading() as tx:
        rollout_ids = retention_records.rollouts_with_old_evaluations(agent_id, cutoff=cutoff, db=tx)
    for rollout_id in rollout_ids:
        with db.reading() as tx:  # the chart's sample is chosen once, before any of the rest goes
            found = retention_records.prunable_evaluations(rollout_id, cutoff=cutoff, db=tx)
        if dry_run:
            total.evaluations += len(found)
            continue
        for start in range(0, len(found), batch * 10):
            began = time.perf_counter()
            with db.transaction() as tx:
                retention_records.delete_evaluations(found[start:start + batch * 10], db=tx)
            _yield_lock(began)
            total.evaluations += len(found[start:start + batch * 10])
            if progress:
                progress("gate evaluations", total)


def _yield_lock(started: float) -> None:
    """Pause as long as the batch held the write lock (at most a second): writers waiting on it go first."""
    time.sleep(min(1.0, time.perf_counter() - started))


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
