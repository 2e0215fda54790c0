"""Traces become scenarios: a recorded session's side-effecting calls, in order, as a twin scenario.

`from_session` reads a session's calls, keeps the side-effecting ones as `expect` (with the
arguments that matter), adds an optional `forbid`, and appends the scenario to the policy's
scenario file beside it (scenario_files.py), never to the person's policy file. `incident_sessions`
lists the sessions around a kill switch or alert of a rollout, offered as scenarios (incident → twin).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlmodel import Session

from gatekeeper.core.trajectory import draft
from gatekeeper.errors import BadRequest, ConfigError, Conflict
from gatekeeper.scenario_files import add_scenario, default_file_name
from gatekeeper.services import Services
from gatekeeper.store import reads, rollout_records, scenario_records
from gatekeeper.store.models import AgentSession, Transition
from gatekeeper.twin_fidelity import to_calls

DEFAULT_WINDOW_S = 600.0  # the sessions around an alert: its rollout's errors over the last ten minutes


@dataclass(frozen=True)
class Made:
    """A scenario made from a session, where it was written, and whether the policy already reads that file."""

    name: str
    file: str
    listed: bool
    scenario: dict[str, Any]
    recorded: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        """Return it as the API answers."""
        note = "" if self.listed else (f"add scenario_files: [{Path(self.file).name}] to stages.twin of the "
                                       "policy to run it")
        return {"scenario": self.name, "file": self.file, "listed": self.listed, **self.scenario,
                "recorded": self.recorded, "note": note}


def from_session(svc: Services, session_id: str, *, name: str, forbid: Sequence[str] = (),
                 arguments: Sequence[str] | None = None) -> Made:
    """Make a twin scenario from a recorded session and add it to the policy's scenario file."""
    with svc.db.reading() as db:
        row = reads.traced_session(session_id, db=db)
        policy_name = rollout_records.agent_by_id(row.agent_id, db=db).policy
        rows = [(d.tool, d.tool_class, d.arguments) for d in reads.session_decisions(session_id, db=db)]
        incident = _incident_of(row, db=db)
        recorded = {"session": row.id, "version": row.version, "arm": row.arm, "environment": row.environment,
                    "at": row.started_at, "incident": incident}
    loaded = svc.policies.get(policy_name)
    policy = loaded.policy
    if name in policy.twin.scenarios:
        raise Conflict(f"policy {policy.name} already has a scenario {name!r}", field="name")
    steps, kept = draft(to_calls(rows), keep=arguments)
    unknown = sorted({tool for tool in (*steps, *forbid) if tool not in policy.tools})
    if unknown:
        raise BadRequest(f"the policy does not name {', '.join(unknown)} in tools; name them there first",
                         field="session_id")
    if not steps and not forbid:
        raise BadRequest("the session made no side-effecting calls: give forbid to assert something",
                         field="forbid")
    scenario: dict[str, Any] = {"expect": steps, "forbid": list(forbid)}
    if any(kept):
        scenario["arguments"] = kept
    file_name = policy.twin.scenario_files[0] if policy.twin.scenario_files else default_file_name(loaded.path)
    path = Path(loaded.path).parent / file_name
    try:
        added = add_scenario(path, name, scenario, recorded)
    except OSError as exc:
        raise ConfigError(f"cannot write the scenario file {path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise Conflict(f"the scenario file {path} has problems; fix it first ({str(exc)[:300]})",
                       field="name") from None
    if not added:
        raise Conflict(f"{path} already has a scenario {name!r}", field="name")
    svc.policies.reload()  # a problem keeps the previous revision in force and is in the logs
    return Made(name, str(path), file_name in policy.twin.scenario_files, scenario, recorded)


def _incident_of(row: AgentSession, *, db: Session) -> str | None:
    if row.rollout_id is None or row.arm != "candidate" or row.environment != "live":
        return None
    for incident in scenario_records.incident_transitions(row.rollout_id, db=db):
        since, until = incident_window(incident)
        erring = scenario_records.erring_sessions(row.rollout_id, since=since, until=until, db=db)
        if any(s.id == row.id for s in erring):
            return incident_label(incident)
    return None


def incident_window(incident: Transition) -> tuple[float, float]:
    """Return the time window whose erring sessions an incident transition stands for."""
    try:
        metrics = json.loads(incident.metrics or "{}")
    except ValueError:
        metrics = {}
    window = metrics.get("window_s") if isinstance(metrics, dict) else None
    width = float(window) if isinstance(window, (int, float)) and window > 0 else DEFAULT_WINDOW_S
    return incident.at - width, incident.at


def incident_label(incident: Transition) -> str:
    """Return what tripped: the kill switch or the alert's name."""
    if incident.actor == "kill_switch":
        return "kill switch"
    try:
        labels = json.loads(incident.metrics or "{}").get("alert", {}).get("labels", {})
    except (ValueError, AttributeError):
        labels = {}
    return f"alert {labels.get('alertname', '?')}" if isinstance(labels, dict) else "alert"


@dataclass(frozen=True)
class Proposal:
    """A session offered as a scenario because it was in an incident."""

    incident: str
    at: float
    session_id: str
    version: str
    reason: str


def incident_sessions(rollout_id: int, *, db: Session) -> list[Proposal]:
    """Return the sessions with errors around each kill switch or alert of the rollout, newest incident first."""
    out = []
    for incident in scenario_records.incident_transitions(rollout_id, db=db):
        since, until = incident_window(incident)
        for row in scenario_records.erring_sessions(rollout_id, since=since, until=until, db=db):
            out.append(Proposal(incident_label(incident), incident.at, row.id, row.version, incident.reason))
    return out
