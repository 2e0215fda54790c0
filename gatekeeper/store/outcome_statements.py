"""The outcome path's statements and the kill switch's counters: plain SQL on a `Tx` (store/hot_path.py).

An outcome report settles its decision in one short transaction on the hot path's raw
connection. The kill switch no longer counts the rollout's outcomes on each report: each live
candidate outcome adds one to a per-rollout ring of time buckets (`kill_switch_counts`, at most
`SLOTS` rows a rollout, so the table never grows) with one UPSERT, and the window's numbers are
the sum of the buckets inside it. A bucket is `bucket_width` seconds wide (1 s, or 1/60 of a
longer window), so the window is exact to one bucket: a bucket that began before the window's
start but ends inside it counts whole. On Postgres the rollout row is locked before the UPSERT,
so reports of one rollout are counted one at a time and each sees every earlier one; SQLite's
BEGIN IMMEDIATE does the same. Nothing here commits.
"""

from __future__ import annotations

import math
from typing import NamedTuple

from gatekeeper.errors import NotFound
from gatekeeper.store.hot_path import Tx

SLOTS = 64  # buckets per rollout: 60 cover a window, the rest keep a bucket being overwritten out of it
BUCKETS_PERWINDOW_SQL = 60


class OutcomeFacts(NamedTuple):
    """A decision with what its outcome report needs of its agent and rollout (a tuple: built per report)."""

    id: str
    session_id: str
    agent_id: int
    agent: str
    policy: str
    agent_rollout_id: int | None
    rollout_id: int | None
    rollout_state: str | None
    version: str
    arm: str
    stage: str | None
    tool_class: str
    verdict: str
    cost_micros: int
    outcome_status: str | None
    actual_cost_micros: int | None
    latency_ms: float | None
    overrun_micros: int | None
    mark: int | None  # the token revocation mark, read in the same transaction (api/auth.py)


_LOAD = """SELECT d.id, d.session_id, d.agent_id, a.name, a.policy, a.rollout_id, d.rollout_id, r.state, d.version,
 d.arm, d.stage, d.tool_class, d.verdict, d.cost_micros, d.outcome_status, d.actual_cost_micros, d.latency_ms,
 d.overrun_micros, (SELECT max(id) FROM token_revocations)
 FROM decisions d JOIN agents a ON a.id = d.agent_id LEFT JOIN rollouts r ON r.id = d.rollout_id
 WHERE d.id = :id"""


def load_decision(tx: Tx, decision_id: str) -> OutcomeFacts:
    """Return the facts of a decision, or raise NotFound."""
    row = tx.one(_LOAD, {"id": decision_id})
    if row is None:
        raise NotFound(f"no decision {decision_id!r}", field="decision_id")
    return OutcomeFacts(*row)


_RECORD = """UPDATE decisions SET outcome_status = :status, actual_cost_micros = :actual, latency_ms = :latency,
 outcome_at = :now, overrun_micros = :overrun WHERE id = :id AND outcome_status IS NULL"""


def record_outcome(tx: Tx, decision_id: str, *, status: str, actual_micros: int, latency_ms: float | None,
                   overrun_micros: int | None, now: float) -> bool:
    """Store a decision's outcome (and its overrun, if any) once; False when it already had one."""
    return tx.run(_RECORD, {"id": decision_id, "status": status, "actual": actual_micros, "latency": latency_ms,
                            "now": now, "overrun": overrun_micros}) == 1


def settle(tx: Tx, session_id: str, *, delta_micros: int) -> None:
    """Replace a reservation's estimate by the actual cost: add the difference to the spend."""
    if delta_micros:
        tx.send("UPDATE sessions SET spend_micros = spend_micros + :delta WHERE id = :id",
               {"id": session_id, "delta": delta_micros})


def lock_rollout(tx: Tx, rollout_id: int) -> None:
    """Serialise the outcome reports of one rollout on Postgres (SQLite's BEGIN IMMEDIATE already does)."""
    if tx.postgres:
        tx.one("SELECT id FROM rollouts WHERE id = :id FOR UPDATE", {"id": rollout_id})


def bucket_width(window_s: float) -> int:
    """Return the width in whole seconds of the kill switch's buckets for a window."""
    return max(1, math.ceil(window_s / BUCKETS_PERWINDOW_SQL))


# A slot holds one bucket; a newer bucket takes the slot over, an older one (a skewed clock) never does.
_COUNT = """INSERT INTO kill_switch_counts (rollout_id, slot, bucket_start, calls, errors)
 VALUES (:rollout_id, :slot, :start, 1, :error)
 ON CONFLICT (rollout_id, slot) DO UPDATE SET
 calls = CASE WHEN kill_switch_counts.bucket_start = excluded.bucket_start THEN kill_switch_counts.calls + 1
  WHEN kill_switch_counts.bucket_start < excluded.bucket_start THEN 1 ELSE kill_switch_counts.calls END,
 errors = CASE WHEN kill_switch_counts.bucket_start = excluded.bucket_start
  THEN kill_switch_counts.errors + excluded.errors
  WHEN kill_switch_counts.bucket_start < excluded.bucket_start THEN excluded.errors
  ELSE kill_switch_counts.errors END,
 bucket_start = CASE WHEN kill_switch_counts.bucket_start < excluded.bucket_start THEN excluded.bucket_start
  ELSE kill_switch_counts.bucket_start END"""

WINDOW_SQL = """SELECT coalesce(sum(calls), 0), coalesce(sum(errors), 0) FROM kill_switch_counts
 WHERE rollout_id = :rollout_id AND bucket_start >= :since"""


def count_outcome(tx: Tx, rollout_id: int, *, error: bool, window_s: float, now: float) -> tuple[int, int]:
    """Count one live candidate outcome in its bucket; return (outcomes, errors) over the window ending now."""
    width = bucket_width(window_s)
    index = math.floor(now / width)
    tx.send(_COUNT, {"rollout_id": rollout_id, "slot": index % SLOTS, "start": index * width, "error": int(error)})
    return window_counts(tx, rollout_id, window_s=window_s, now=now)


def window_counts(tx: Tx, rollout_id: int, *, window_s: float, now: float) -> tuple[int, int]:
    """Return (outcomes, errors) of the rollout's live candidate calls in the buckets inside the window."""
    width = bucket_width(window_s)
    since = math.floor((now - window_s) / width) * width
    row = tx.one(WINDOW_SQL, {"rollout_id": rollout_id, "since": since})
    return int(row[0]), int(row[1])
