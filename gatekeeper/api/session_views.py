"""A twin run's verdict on its trace, and the cursor of an agent's session listing.

The end route fixes `passed` when a twin run ends (sessions.passed); the problems behind it and a
stable replay's faithfulness are not stored, so the trace judges them again on read: the same
judgement as the end route (gatekeeper.sessions `judge_run`) over the decisions the trace has
already read and the policy in memory, so it costs no query more than the agent's row.
"""

from __future__ import annotations

import base64
import binascii
import json
import math

from sqlmodel import Session

from gatekeeper.api.trace_schemas import TraceReplay, TraceVerdict
from gatekeeper.errors import BadRequest, NotFound
from gatekeeper.policy_store import PolicyStore
from gatekeeper.sessions import judge_run
from gatekeeper.store import rollout_records
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
        problems = [HARNESS_FAILED]
    again = judged.get("replay") if judged else None
    return TraceVerdict(passed=row.passed, problems=problems,
                        replay=TraceReplay.model_validate(again) if again else None)


def cursor_of(key: Key | None) -> str | None:
    """Return the opaque cursor of a listing position (None stays None)."""
    if key is None:
        return None
    return base64.urlsafe_b64encode(json.dumps([key[0], key[1]]).encode()).decode().rstrip("=")


def key_of(cursor: str | None) -> Key | None:
    """Return the listing position a cursor names, or raise BadRequest for one this server did not make."""
    if cursor is None:
        return None
    try:
        loaded = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, binascii.Error):
        loaded = None
    if (not isinstance(loaded, list) or len(loaded) != 2 or isinstance(loaded[0], bool)
            or not isinstance(loaded[0], (int, float)) or not math.isfinite(loaded[0])
            or not isinstance(loaded[1], str) or not 0 < len(loaded[1]) <= 40 or "\x00" in loaded[1]):
        raise BadRequest("not a cursor of this listing: pass the `next` of the previous page", field="before")
    return (float(loaded[0]), loaded[1])
