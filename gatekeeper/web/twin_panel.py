"""The agent page's twin panel: fidelity over time, diverging replays, known differences, incident sessions.

Fidelity is read over the last `FIDELITY_DAYS` of the stable version's twin replays (bounded reads);
differences come from the policy and the newest twin gate report's snapshot age; incident sessions
are the erring sessions around each kill switch or alert of the current rollout, offered as scenarios.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlmodel import Session

from gatekeeper import twin_fidelity
from gatekeeper.core.differences import differences
from gatekeeper.core.fidelity import DAY_S, Fidelity, Replay, by_day, summarize
from gatekeeper.core.policy import Policy
from gatekeeper.scenarios import Proposal, incident_sessions
from gatekeeper.store.models import Agent

FIDELITY_DAYS = 30
SHOWN_REPLAYS = 20


@dataclass(frozen=True)
class TwinPanel:
    """What the agent page shows about the twin."""

    fidelity: Fidelity
    days: list[tuple[float, Fidelity]]
    replays: list[Replay]  # newest first
    differences: list[dict[str, str]]
    proposals: list[Proposal] = field(default_factory=list)
    recorded: int = 0  # scenarios recorded from live stable sessions


def twin_panel(db: Session, agent: Agent, *, policy: Policy | None, rollout_id: int | None,
               report: dict[str, Any] | None, now: float) -> TwinPanel | None:
    """Return the twin panel of an agent, or None when its policy is not loaded."""
    if policy is None or agent.id is None:
        return None
    found = twin_fidelity.replays(policy, agent_id=agent.id, since=now - FIDELITY_DAYS * DAY_S, db=db)
    fidelity = summarize(found)
    age = (report or {}).get("values", {}).get("twin_snapshot_age_s") if (report or {}).get("gate") == "twin" \
        else None
    proposals = incident_sessions(rollout_id, db=db) if rollout_id is not None else []
    return TwinPanel(fidelity, by_day(found), list(reversed(found))[:SHOWN_REPLAYS],
                     differences(policy, fidelity=fidelity, snapshot_age_s=age), proposals,
                     len(twin_fidelity.replayable(policy)))
