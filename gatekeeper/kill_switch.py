"""The kill switch in the decision path: reacts to the outcome report that crosses the threshold.

Each outcome report of a live candidate call adds itself to the rollout's time buckets in the
database (store/outcome_statements.py) and sums the buckets inside the policy's window, so every
worker and replica sees the same numbers. When they cross, `check` runs right after the report
commits: it locks the rollout, sums the buckets again and kills the rollout (reverted per the
policy): one durable change with an audit entry carrying the measured rate. Should the process
die between the two, the next report that still crosses trips it. Candidate
decisions are then denied with reason `kill_switch`, because they read the rollout's state.
The rollout row is locked first (Postgres; SQLite's BEGIN IMMEDIATE serialises anyway), so of
concurrent reports that cross, exactly one trips it.
"""

from __future__ import annotations

from sqlmodel import Session

from gatekeeper import rollouts
from gatekeeper.core.kill_rule import trips
from gatekeeper.core.vocabulary import LIVE_STATES
from gatekeeper.policy_store import LoadedPolicy
from gatekeeper.store import rollout_records, session_records
from gatekeeper.store.models import Agent


def check(db: Session, loaded: LoadedPolicy, agent: Agent, rollout_id: int, *, now: float) -> bool:
    """Trip the kill switch inside the caller's transaction if the error rate crossed; return whether it did."""
    rollout = rollout_records.locked_rollout(rollout_id, db=db)
    if rollout is None or rollout.id != agent.rollout_id or rollout.state not in LIVE_STATES:
        return False
    policy = loaded.policy.kill_switch
    calls, errors = session_records.candidate_outcomes(rollout_id, window_s=policy.window_s, now=now, db=db)
    if not trips(policy, calls=calls, errors=errors):
        return False
    rate = errors / calls
    reason = (f"kill switch: candidate error rate {rate:.1%} over {policy.window_s:g}s "
              f"({errors}/{calls} calls) is above {policy.max_error_rate:.1%}")
    rollouts.transition(db, loaded, agent, rollout, "kill", actor="kill_switch", reason=reason, now=now,
                        metrics={"error_rate": rate, "calls": calls, "errors": errors,
                                 "threshold": policy.max_error_rate, "window_s": policy.window_s})
    return True
