"""Agent-session use cases: start a session (arm, caps, shadow mirror) and end it (summary, trajectory).

Deciding a tool call and reporting its outcome are in gatekeeper.decisions. Data flows one way:
the API adapter validates the body, the use case gathers the facts in one transaction (`db`),
asks the pure core, writes, commits once and returns a plain result for the adapter to render.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from typing import Any, NamedTuple

from gatekeeper.core import ladder
from gatekeeper.core.bucketing import RolloutFacts, assign, bucket
from gatekeeper.core.budgets import caps_for, to_dollars
from gatekeeper.core.policy import Policy
from gatekeeper.core.trajectory import Step, handling_problems, replay
from gatekeeper.core.trajectory import judge as judge_trajectory
from gatekeeper.errors import BadRequest, Conflict, Forbidden
from gatekeeper.services import Services
from gatekeeper.store import rollout_records, session_records
from gatekeeper.store.models import Agent, AgentSession, Decision, Rollout
from gatekeeper.twin_fidelity import to_calls


def new_id() -> str:
    """Return a fresh id for a session, decision or approval: time-ordered, then random."""
    # Time first, so that inserts append to the primary-key index instead of splitting random pages.
    # Ids are not secrets (every route checks the caller's agent), so the fast generator will do.
    return f"{time.time_ns() // 1000:014x}{random.getrandbits(40):010x}"


def check_scope(agent: str, scope: str | None) -> None:
    """Refuse an agent token acting on another agent's session (scope None: any agent)."""
    if scope is not None and scope != agent:
        raise Forbidden(f"this session belongs to another agent than {scope!r}", field="session_id")


class Labels(NamedTuple):
    """The low-cardinality labels of a session's metrics, in the metrics' label order."""

    agent: str
    version: str
    arm: str
    stage: str


# -- start ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Started:
    """A new session, and its shadow mirror when the candidate must shadow it."""

    session: AgentSession
    agent: str
    mirror: AgentSession | None


def start_session(svc: Services, agent_name: str, *, session_key: str | None, environment: str,
                  scenario: str | None, twin_snapshot_at: float | None, now: float,
                  seed: str | None = None, arm: str | None = None) -> Started:
    """Assign a new session to an arm, fix its caps, and open a mirror in shadow; a twin session gets its seed;
    `arm` picks a twin run's."""
    with svc.db.transaction() as db:
        agent = rollout_records.get_agent(agent_name, db=db)
        policy = svc.policies.get(agent.policy).policy
        _check_scenario(policy, environment=environment, scenario=scenario)
        if seed is not None and environment != "twin":
            raise BadRequest("a seed drives the twin's rehearsed failures: send environment=twin", field="seed")
        if arm is not None and environment != "twin":
            raise BadRequest("only a twin session may choose its arm: send environment=twin", field="arm")
        rollout = rollout_records.current_rollout(agent, db=db)
        key = session_key or new_id()
        facts = _rollout_facts(policy, rollout)
        place = assign(facts, environment=environment,
                       bucket_=bucket(agent_name, facts.id, key) if facts else 0, twin_arm=arm or "candidate")
        row = _new_session(agent, rollout, policy, arm=place.arm, stage=place.stage, environment=environment,
                           key=key, scenario=scenario, snapshot=twin_snapshot_at, now=now)
        if environment == "twin":  # the rehearsed failures' seed (core/chaos.py): given, else the session id
            row.seed = seed or row.id
        db.add(row)
        mirror = None
        if place.mirror:
            mirror = _new_session(agent, rollout, policy, arm="candidate", stage="shadow", environment="live",
                                  key=key, scenario=None, snapshot=None, now=now, mirror_of=row.id)
            db.add(mirror)
        return Started(row, agent_name, mirror)


def _check_scenario(policy: Policy, *, environment: str, scenario: str | None) -> None:
    if scenario is None:
        return
    if environment != "twin":
        raise BadRequest("a scenario runs against the twin: send environment=twin", field="scenario")
    if scenario not in policy.twin.scenarios:
        known = ", ".join(sorted(policy.twin.scenarios)) or "none"
        raise BadRequest(f"policy {policy.name} has no scenario {scenario!r} (known: {known})", field="scenario")


def _rollout_facts(policy: Policy, rollout: Rollout | None) -> RolloutFacts | None:
    if rollout is None or rollout.id is None:
        return None
    percent = ladder.traffic_percent(policy, ladder.Tier(rollout.stage, rollout.tier))
    return RolloutFacts(rollout.id, rollout.stage, rollout.state, percent, policy.shadow.traffic_percent)


def _new_session(agent: Agent, rollout: Rollout | None, policy: Policy, *, arm: str, stage: str | None,
                 environment: str, key: str, scenario: str | None, snapshot: float | None, now: float,
                 mirror_of: str | None = None) -> AgentSession:
    caps = caps_for(policy, arm=arm, stage=stage)
    version = rollout.candidate_version if arm == "candidate" and rollout else (agent.stable_version or "")
    return AgentSession(
        id=new_id(), agent_id=agent.id or 0, rollout_id=rollout.id if rollout else None, version=version, arm=arm,
        stage=stage, environment=environment, session_key=key, scenario=scenario, mirror_of=mirror_of,
        cap_tool_calls=caps.tool_calls_per_session, cap_spend_micros=caps.spend_per_session_micros,
        twin_snapshot_at=snapshot, started_at=now)


# -- end --------------------------------------------------------------------------------------


def end_session(svc: Services, session_id: str, *, scope: str | None, status: str, passed: bool | None,
                now: float) -> dict[str, Any]:
    """Close a session and return its summary; twin scenario runs get their trajectory judged."""
    with svc.db.transaction() as db:
        row = session_records.get_session(session_id, db=db)
        agent = rollout_records.agent_by_id(row.agent_id, db=db)
        check_scope(agent.name, scope)
        decisions = session_records.decisions_of(session_id, db=db)
        trajectory = _trajectory(svc, agent, row, decisions, passed=passed, status=status)
        verdict_passed = trajectory["passed"] if trajectory else passed
        if row.status == "open":
            session_records.end_session(session_id, status=status, passed=verdict_passed, now=now, db=db)
            session_records.cancel_session_approvals(session_id, reason="the session ended", now=now, db=db)
            db.refresh(row)
        if (row.status, row.passed) != (status, verdict_passed):
            raise Conflict(f"session {session_id} already ended as {row.status}", field="status")
        return summary(agent, row, decisions, trajectory)


def _trajectory(svc: Services, agent: Agent, row: AgentSession, decisions: list[Decision], *,
                passed: bool | None, status: str) -> dict[str, Any] | None:
    return judge_run(svc.policies.get(agent.policy).policy, row, decisions, harness_passed=passed, status=status)


def judge_run(policy: Policy, row: AgentSession, decisions: list[Decision], *, harness_passed: bool | None,
              status: str) -> dict[str, Any] | None:
    """Judge a twin scenario run's calls against its scenario (None: the session ran no scenario)."""
    if row.scenario is None:
        return None
    scenario = policy.twin.scenarios.get(row.scenario)
    if scenario is None:  # the policy dropped the scenario since the session started
        return {"passed": False, "problems": [f"scenario {row.scenario} is no longer in the policy"]}
    calls = to_calls([(d.tool, d.tool_class, d.arguments) for d in decisions])
    found = judge_trajectory(calls, expect=scenario.expect, forbid=scenario.forbid,
                             harness_passed=harness_passed, arguments=scenario.arguments)
    steps = [Step(d.tool, d.tool_class, d.verdict, d.outcome_status == "error") for d in decisions]
    handling = handling_problems(steps, max_retries=scenario.max_retries, no_blind_retry=scenario.no_blind_retry,
                                 ends_cleanly=scenario.ends_cleanly, status=status)
    problems = [*found.problems, *handling]
    out: dict[str, Any] = {"passed": not problems, "problems": problems}
    if row.arm == "stable" and scenario.recorded and scenario.recorded.replayable:
        again = replay(calls, expect=scenario.expect, arguments=scenario.arguments)
        out["replay"] = {"faithful": again.faithful, "divergence": again.divergence, "detail": again.detail}
    return out


def summary(agent: Agent, row: AgentSession, decisions: list[Decision], trajectory: dict[str, Any] | None
            ) -> dict[str, Any]:
    """Return the session summary the end route answers with."""
    verdicts: dict[str, int] = {}
    for decision in decisions:
        verdicts[decision.verdict] = verdicts.get(decision.verdict, 0) + 1
    return {
        "session_id": row.id, "agent": agent.name, "version": row.version, "arm": row.arm, "stage": row.stage,
        "environment": row.environment, "scenario": row.scenario, "status": row.status, "passed": row.passed,
        "tool_calls": row.tool_calls, "spend": to_dollars(row.spend_micros),
        "caps": {"tool_calls": row.cap_tool_calls, "spend": to_dollars(row.cap_spend_micros)},
        "decisions": verdicts, "trajectory": trajectory, "started_at": row.started_at, "ended_at": row.ended_at,
    }
