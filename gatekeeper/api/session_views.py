"""A twin run's verdict on its trace, and where an agent's session listing goes on from.

The end route fixes `passed` when a twin run ends (sessions.passed); the problems behind it and a
stable replay's faithfulness are not stored, so the trace judges them again on read: the same
judgement as the end route (gatekeeper.sessions `judge_run`) over the decisions the trace has
already read and the policy in memory, so it costs no query more than the agent's row.
"""

from __future__ import annotations

from sqlmodel import Session

from gatekeeper.api.trace_schemas import TraceReplay, TraceVerdict
from gatekeeper.errors import NotFound
from gatekeeper.policy_store import PolicyStore
from gatekeeper.sessions import judge_run
from gatekeeper.store import reads, rollout_records
from gatekeeper.store.models import AgentSession, Decision
from gatekeeper.store.session_pages import Key

HARNESS_FAILED = "the harness reported failure (or the scenario changed since the run ended)"


def trace_verdict(db: Session, policies: PolicyStore, row: AgentSession, decisions: list[Decision]
                  ) -> TraceVerdict | None:
    """Return an ended twin run's verdict: `passed` as stored, problems and replay judged again (None: not one)."""
    if row.environment != "twin" or row.status == "open":
        return None
    judged = None
    if row.scenario is not None:
        try:
            policy = policies.get(rollout_records.agent_by_id(row.agent_id, db=db).policy).policy
        except NotFound:  # the agent's policy file is gone: only the stored verdict is known
            policy = None
        if policy is not None:
            judged = judge_run(policy, row, decisions, harness_passed=None, status=row.status)
    problems = list(judged["problems"]) if judged else []
    if row.passed is False and not problems:  # the harness's own flag is not stored, only its effect
        problems = [HARNESS_FAILED if row.scenario else "the harness reported failure"]
    again = judged.get("replay") if judged else None
    return TraceVerdict(passed=row.passed, problems=problems,
                        replay=TraceReplay.model_validate(again) if again else None)


def listed_after(db: Session, agent_id: int, session_id: str | None) -> Key | None:
    """Return where the listing goes on after this session of the agent (None: from the newest)."""
    if session_id is None:
        return None
    try:
        row = reads.traced_session(session_id, db=db)
    except NotFound:
        row = None
    if row is None or row.agent_id != agent_id:
        raise NotFound(f"no session {session_id!r} of this agent to list sessions before", field="before")
    return (row.started_at, row.id)
