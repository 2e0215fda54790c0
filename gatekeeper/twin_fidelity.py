"""The twin's fidelity from the database: the stable version's twin replays of recorded scenarios.

The gate cycle reads the replays of a tier visit beside the candidate's twin runs
(stage_evidence.py); the agent page reads the last weeks of them for fidelity over time. Both
judge each replay with core/trajectory.py `replay` against its scenario's recording.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from sqlmodel import Session

from gatekeeper.core.differences import differences
from gatekeeper.core.fidelity import Fidelity, Replay, summarize
from gatekeeper.core.gates import TwinRun
from gatekeeper.core.policy import Policy, Scenario
from gatekeeper.core.trajectory import Call, replay
from gatekeeper.store import scenario_records


def replayable(policy: Policy) -> dict[str, Scenario]:
    """Return the scenarios recorded from live stable sessions: their stable replays measure fidelity."""
    return {name: s for name, s in policy.twin.scenarios.items() if s.recorded and s.recorded.replayable}


def to_calls(rows: Sequence[tuple[str, str, str | None]]) -> list[Call]:
    """Turn stored (tool, class, arguments JSON) rows into calls."""
    return [Call(tool, tool_class, _arguments(text)) for tool, tool_class, text in rows]


def _arguments(text: str | None) -> Mapping[str, Any] | None:
    try:
        loaded = json.loads(text) if text else None
    except ValueError:
        return None
    return loaded if isinstance(loaded, dict) else None


def replays(policy: Policy, *, agent_id: int | None = None, rollout_id: int | None = None, since: float,
            db: Session) -> list[Replay]:
    """Judge the stable version's twin runs of recorded scenarios since `since`, oldest first.

    A run of another version than the recorded one says nothing about the twin and is left out.
    """
    scenarios = replayable(policy)
    runs = scenario_records.stable_replays(list(scenarios), agent_id=agent_id, rollout_id=rollout_id, since=since,
                                           db=db)
    calls = scenario_records.calls_with_arguments([r.id for r in runs], db=db)
    out = []
    for run in runs:
        scenario = scenarios[run.scenario or ""]
        if scenario.recorded is None or run.version != scenario.recorded.version:
            continue
        verdict = replay(to_calls(calls.get(run.id, [])), expect=scenario.expect, arguments=scenario.arguments)
        out.append(Replay(scenario.name, run.id, run.started_at, verdict.faithful, verdict.divergence,
                          verdict.detail))
    return out


def twin_extras(policy: Policy, runs: Sequence[TwinRun], found: Sequence[Replay], *, now: float
                ) -> tuple[Fidelity, list[dict[str, str]]]:
    """Return the fidelity and known differences the twin gate report carries."""
    snapshots = [run.snapshot_at for run in runs if run.snapshot_at is not None]
    fidelity = summarize(found)
    age = now - max(snapshots) if snapshots else None
    return fidelity, differences(policy, fidelity=fidelity, snapshot_age_s=age)
