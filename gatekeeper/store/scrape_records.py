"""What a /metrics scrape reads from the database: each agent's rollout, and gate evaluation counts.

Plain SQL, read at scrape time so that every worker and replica reports the same truth.
Nothing here commits.
"""

from __future__ import annotations

from typing import NamedTuple

from sqlalchemy import text
from sqlmodel import Session

_ROLLOUTS = text("""SELECT a.name, a.stable_version, r.candidate_version, r.stage, r.tier, r.kill_switch_open,
 a.policy FROM agents a LEFT JOIN rollouts r ON r.id = a.rollout_id ORDER BY a.name""")
_EVALUATIONS = text("""SELECT a.name, g.result, count(*) FROM gate_evaluations g JOIN agents a ON a.id = g.agent_id
 GROUP BY a.name, g.result ORDER BY a.name, g.result""")


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
    """Return (agent, result, count) of every gate evaluation, by agent and result."""
    return [(name, result, int(count)) for name, result, count in db.execute(_EVALUATIONS)]
