"""The kill switch in the decision path: reacts to the outcome report that crosses the threshold.

Each outcome report of a live candidate call counts the rollout's candidate outcomes over the
policy's window from the database, so every worker and replica sees the same numbers. When
they cross, the rollout is killed (and reverted per the policy) in the report's own
transaction: one durable change with an audit entry carrying the measured rate. Candidate
decisions are then denied with reason `kill_switch`, because they read the rollout's state.
The rollout row is locked first (Postgres), so concurrent reports are counted one at a time
and exactly one of them trips it.
"""

from __future__ import annotations

from sqlmodel import Session

from gatekeeper import rollouts
from gatekeeper.core.kill_rule import trips, window_start
from gatekeeper.core.vocabulary import LIVE_STATES
from gatekeeper.policy_store import LoadedPolicy
from gatekeeper.store import rollout_records, session_records
from gatekeeper.store.models import Agent


def check(db: Session, loaded: LoadedPolicy, agent: Agent, rollout_id: int, *, now: float) -> bool:
    """Trip the kill switch inside the caller's transaction if the error rate crossed; return whether it did."""
    rollout = rollout_records.locked_rollout(db, rollout_id)
    if rollout is None or rollout.id != agent.rollout_id or rollout.state not in LIVE_STATES:
        return False
    policy = loaded.policy.kill_switch
    calls, errors = session_records.candidate_outcomes(db, rollout_id, since=window_start(policy, now=now))
    if not trips(policy, calls=calls, errors=errors):
        return False
    rate = errors / calls
    reason = (f"kill switch: candidate error rate {rate:.1%} over {policy.window_s:g}s "
              f"({errors}/{calls} calls) is above {policy.max_error_rate:.1%}")
    rollouts.transition(db, loaded, agent, rollout, "kill", actor="kill_switch", reason=reason, now=now,
                        metrics={"error_rate": rate, "calls": calls, "errors": errors,
                                 "threshold": policy.max_error_rate, "window_s": policy.window_s})
    return True
