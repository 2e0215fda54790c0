"""What a /metrics scrape reads from the database: each agent's rollout, and gate evaluation counts.

Plain SQL, read at scrape time so that every worker and replica reports the same truth.
Evaluations are counted as they are written (`count_evaluations`, in the transaction that
inserts them), so a scrape reads a few rows per agent however many evaluations are stored
and whatever retention has pruned. Nothing here commits.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import NamedTuple

from sqlalchemy import text
from sqlmodel import Session

_ROLLOUTS = text("""SELECT a.name, a.stable_version, r.candidate_version, r.stage, r.tier, r.kill_switch_open,
 a.policy FROM agents a LEFT JOIN rollouts r ON r.id = a.rollout_id ORDER BY a.name""")
_EVALUATIONS = text("""SELECT a.name, c.result, c.count FROM gate_evaluation_counts c JOIN agents a ON a.id = c.agent_id
 ORDER BY a.name, c.result""")
_COUNT = text("""INSERT INTO gate_evaluation_counts (agent_id, result, count) VALUES (:agent_id, :result, :count)
 ON CONFLICT (agent_id, result) DO UPDATE SET count = gate_evaluation_counts.count + excluded.count""")


class AgentRollout(NamedTuple):
    """One agent's versions and where its active rollout stands (None without one)."""

    name: str
    stable: str | None
    candidate: str | None
    stage: str | None
    tier: int | None
    kill_switch_open: bool | None
    policy: str


def agent_rollouts(*, db: Session) -> list[AgentRollout]:
    """Return every agent with its active rollout, by name."""
    return [AgentRollout(*row) for row in db.execute(_ROLLOUTS)]


def evaluation_counts(*, db: Session) -> list[tuple[str, str, int]]:
    """Return (agent, result, count) of every gate evaluation ever stored, by agent and result."""
    return [(name, result, int(count)) for name, result, count in db.execute(_EVALUATIONS)]


def count_evaluations(rows: Iterable[tuple[int, str]], *, db: Session) -> None:
    """Add gate evaluations, given as (agent id, result), to the counts; call it where they are inserted."""
    counted = Counter((int(agent_id), str(result)) for agent_id, result in rows)
    if counted:
        db.execute(_COUNT, [{"agent_id": a, "result": r, "count": n} for (a, r), n in sorted(counted.items())])
