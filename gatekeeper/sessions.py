"""Agent-runtime use cases: start a session, decide a tool call, report its outcome, end the session.

Data flows one way: the API adapter validates the body, the use case gathers the facts in one
transaction, asks the pure core for the verdict, writes, commits once and returns a plain
result that the adapter renders and counts in the metrics. `decide` runs on the hot path's
raw connection (see gatekeeper.store.runtime); the others use the ORM unit of work.
"""

from __future__ import annotations

import random
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from sqlmodel import Session

from gatekeeper import kill_switch
from gatekeeper.core import ladder
from gatekeeper.core.arguments import Bound, bind, digest
from gatekeeper.core.bucketing import RolloutFacts, assign, bucket
from gatekeeper.core.budgets import cap_reason, caps_for, remaining, to_dollars
from gatekeeper.core.policy import Caps, Policy
from gatekeeper.core.sequence import relevant_tools
from gatekeeper.core.trajectory import judge as judge_trajectory
from gatekeeper.core.verdicts import Call, Verdict, after_reservation, effective_stage, judge, message
from gatekeeper.errors import BadRequest, Conflict, Forbidden
from gatekeeper.services import Services
from gatekeeper.store import rollout_records
from gatekeeper.store import runtime as store
from gatekeeper.store.models import Agent, AgentSession, Decision, Rollout
from gatekeeper.store.runtime import HotPath, SessionFacts, Tx


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
                  scenario: str | None, twin_snapshot_at: float | None, now: float) -> Started:
    """Assign a new session to an arm, fix its caps, and open a mirror in shadow."""
    with svc.db.transaction() as session:
        agent = rollout_records.get_agent(session, agent_name)
        policy = svc.policies.get(agent.policy).policy
        _check_scenario(policy, environment=environment, scenario=scenario)
        rollout = rollout_records.current_rollout(session, agent)
        key = session_key or new_id()
        facts = _rollout_facts(policy, rollout)
        place = assign(facts, environment=environment,
                       bucket_=bucket(agent_name, facts.id, key) if facts else 0)
        row = _new_session(agent, rollout, policy, arm=place.arm, stage=place.stage, environment=environment,
                           key=key, scenario=scenario, snapshot=twin_snapshot_at, now=now)
        session.add(row)
        mirror = None
        if place.mirror:
            mirror = _new_session(agent, rollout, policy, arm="candidate", stage="shadow", environment="live",
                                  key=key, scenario=None, snapshot=None, now=now, mirror_of=row.id)
            session.add(mirror)
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
    percent = ladder.traffic_percent(policy, ladder.Position(rollout.stage, rollout.tier))
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


# -- decide -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Ask:
    """One tool call the agent wants to make."""

    session_id: str
    tool: str
    cost_micros: int
    preview: str | None = None
    approval_id: str | None = None
    arguments: Mapping[str, Any] | None = None
    request_id: str | None = None


class Decided(NamedTuple):
    """The verdict on one call, the budget left, and the labels to count it under (a tuple: built per decision).

    `replayed` is True when a retry with a known request id got the first answer back: nothing was
    reserved or recorded again, so the adapter counts nothing either.
    """

    decision_id: str
    verdict: Verdict
    remaining_calls: int
    remaining_micros: int
    approval_id: str | None
    labels: Labels
    message: str = ""
    replayed: bool = False


def decide(svc: Services, hot: HotPath, ask: Ask, *, scope: str | None, now: float) -> Decided:
    """Return the verdict on one tool call, reserving its call and cost atomically when it may run."""
    try:
        with hot.transaction() as tx:
            facts = store.load_session(tx, ask.session_id)
            check_scope(facts.agent, scope)
            policy = svc.policies.get(facts.policy).policy
            first = store.first_answer(tx, facts.id, ask.request_id) if ask.request_id is not None else None
            if first is not None:
                return _replay(policy, facts, ask, first)
            if facts.status != "open":
                raise Conflict(f"session {ask.session_id} has ended ({facts.status})", field="session_id")
            bound = bind(ask.arguments, redact_fields=policy.approvals.redact) if ask.arguments is not None else None
            call = _call(tx, policy, facts, ask, bound, now=now)
            verdict, used = _reserve(tx, facts, ask, judge(policy, call))
            return _record(tx, policy, facts, ask, call, verdict, bound, used=used, now=now)
    except Exception as exc:
        if ask.request_id is None or not store.is_duplicate(exc):
            raise
        # A concurrent retry of the same request committed first: its answer is this one's.
        return _replay_committed(svc, hot, ask, scope=scope, error=exc)


def _replay_committed(svc: Services, hot: HotPath, ask: Ask, *, scope: str | None, error: Exception) -> Decided:
    assert ask.request_id is not None  # only retries get here
    with hot.transaction() as tx:
        facts = store.load_session(tx, ask.session_id)
        check_scope(facts.agent, scope)
        first = store.first_answer(tx, facts.id, ask.request_id)
        if first is None:
            raise error
        return _replay(svc.policies.get(facts.policy).policy, facts, ask, first)


def _replay(policy: Policy, facts: SessionFacts, ask: Ask, first: store.FirstAnswer) -> Decided:
    """Return the first answer to a request id again; a different call under the same id is refused."""
    sent = digest(ask.arguments) if ask.arguments is not None else None
    if (first.tool, first.cost_micros, first.arguments_digest) != (ask.tool, ask.cost_micros, sent):
        raise Conflict(f"request_id {ask.request_id!r} was already used for a different call in this session "
                       f"({first.tool}, {to_dollars(first.cost_micros):g} dollars)", field="request_id")
    verdict = Verdict(first.verdict, first.reason)
    text = message(first.reason, policy=policy, tool=first.tool, caps=caps_of(facts), approval_id=first.approval_id)
    return Decided(first.decision_id, verdict, first.remaining_tool_calls or 0, first.remaining_spend_micros or 0,
                   first.approval_id, Labels(facts.agent, facts.version, facts.arm, first.stage or "none"),
                   text, True)


def _call(tx: Tx, policy: Policy, facts: SessionFacts, ask: Ask, bound: Bound | None, *, now: float) -> Call:
    tools = relevant_tools(policy.sequence_rules, ask.tool)
    if tools:
        store.lock_session(tx, facts.id)
    caps = caps_of(facts)
    room = cap_reason(caps, tool_calls=facts.tool_calls, spend_micros=facts.spend_micros,
                      cost_micros=ask.cost_micros)
    approval = _approval_state(tx, facts, ask, bound, now=now) if ask.approval_id is not None else None
    return Call(arm=facts.arm, environment=facts.environment, mirror=facts.mirror,
                rollout_stage=facts.rollout_stage, rollout_state=facts.rollout_state, tool=ask.tool,
                tool_class=policy.tool_class(ask.tool), ran=store.ran_counts(tx, facts.id, tools) if tools else {},
                approval=approval, cap_reason=room)


def caps_of(facts: SessionFacts) -> Caps:
    """Return the caps fixed on a session at start."""
    return Caps(facts.cap_tool_calls, facts.cap_spend_micros)


def _approval_state(tx: Tx, facts: SessionFacts, ask: Ask, bound: Bound | None, *, now: float) -> str:
    """Check the approval sent with a repeated call; a mismatch is the caller's mistake (4xx)."""
    found = store.load_approval(tx, ask.approval_id or "")
    if found is None or found.session_id != facts.id:
        raise BadRequest(f"no approval {ask.approval_id!r} for this session", field="approval_id")
    if found.tool != ask.tool:
        raise BadRequest(f"approval {ask.approval_id} is for tool {found.tool!r}", field="approval_id")
    if ask.cost_micros > found.cost_micros:
        raise BadRequest(f"the approval covers at most {to_dollars(found.cost_micros):g} dollars", field="cost")
    if found.arguments_digest != (bound.digest if bound else None):
        return "changed"  # an approval binds exactly the arguments it was asked for (SPEC §2)
    if found.state == "pending" and now >= found.expires_at:
        store.expire_approval(tx, found.id)
        return "expired"
    return "used" if found.state == "approved" and found.consumed else found.state


def _reserve(tx: Tx, facts: SessionFacts, ask: Ask, verdict: Verdict) -> tuple[Verdict, tuple[int, int]]:
    """Make the one atomic reservation the verdict asks for; return the final verdict and counters."""
    used = (facts.tool_calls, facts.spend_micros)
    if not verdict.reserve:
        return verdict, used
    got = store.reserve(tx, facts.id, cost_micros=ask.cost_micros)
    if got is not None:
        return after_reservation(verdict, reserved=True, cap_reason=""), got
    used = store.counters(tx, facts.id)
    reason = cap_reason(caps_of(facts), tool_calls=used[0], spend_micros=used[1], cost_micros=ask.cost_micros)
    return after_reservation(verdict, reserved=False, cap_reason=reason or "cap_tool_calls"), used


def _record(tx: Tx, policy: Policy, facts: SessionFacts, ask: Ask, call: Call, verdict: Verdict,
            bound: Bound | None, *, used: tuple[int, int], now: float) -> Decided:
    if verdict.consume_approval and verdict.verdict == "allow" and ask.approval_id is not None:
        store.consume_approval(tx, ask.approval_id, now=now)  # the row is locked (or BEGIN IMMEDIATE)
    approval_id = ask.approval_id if verdict.verdict == "approval_required" or verdict.consume_approval else None
    stage = stage_label(call)
    if verdict.open_approval:
        approval_id = _open_approval(tx, policy, facts, ask, bound, tool_class=call.tool_class, now=now)
    decision_id = new_id()
    caps = caps_of(facts)
    calls, micros = remaining(caps, tool_calls=used[0], spend_micros=used[1])
    row = {
        "id": decision_id, "session_id": facts.id, "agent_id": facts.agent_id, "rollout_id": facts.rollout_id,
        "version": facts.version, "arm": facts.arm, "stage": stage, "tool": ask.tool,
        "tool_class": call.tool_class, "cost_micros": ask.cost_micros, "verdict": verdict.verdict,
        "reason": verdict.reason, "would_verdict": verdict.would_verdict, "would_reason": verdict.would_reason,
        "approval_id": approval_id, "preview": ask.preview, "at": now}
    if bound is not None or ask.request_id is not None:
        row.update(arguments=bound.redacted if bound else None, arguments_digest=bound.digest if bound else None,
                   request_id=ask.request_id, remaining_tool_calls=calls, remaining_spend_micros=micros)
    store.insert_decision(tx, row)
    text = message(verdict.reason, policy=policy, tool=ask.tool, caps=caps, approval_id=approval_id)
    return Decided(decision_id, verdict, calls, micros, approval_id,
                   Labels(facts.agent, facts.version, facts.arm, stage), text)


def stage_label(call: Call) -> str:
    """Return the stage a decision is recorded and counted under."""
    stage = effective_stage(call)
    return "twin" if stage == "twin_session" else (stage or "none")


def _open_approval(tx: Tx, policy: Policy, facts: SessionFacts, ask: Ask, bound: Bound | None, *,
                   tool_class: str, now: float) -> str:
    approval_id = new_id()
    store.insert_approval(tx, {
        "id": approval_id, "agent_id": facts.agent_id, "session_id": facts.id, "rollout_id": facts.rollout_id,
        "version": facts.version, "tool": ask.tool, "tool_class": tool_class, "cost_micros": ask.cost_micros,
        "preview": ask.preview, "stage": facts.rollout_stage, "arguments": bound.redacted if bound else None,
        "arguments_digest": bound.digest if bound else None, "created_at": now,
        "expires_at": now + policy.approvals.expire_after_s})
    return approval_id


# -- outcome ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reported:
    """A settled outcome; `first` is False for an idempotent repeat. `decision.overrun_micros` is set when
    the actual cost exceeded the reservation."""

    decision: Decision
    first: bool
    kill_switch_tripped: bool
    labels: Labels


def report_outcome(svc: Services, decision_id: str, *, scope: str | None, status: str,
                   actual_micros: int | None, latency_ms: float | None, now: float) -> Reported:
    """Settle an allowed call's reservation with its actual cost; trip the kill switch if it crosses."""
    with svc.db.transaction() as session:
        decision = store.get_decision(session, decision_id)
        row = store.get_session(session, decision.session_id)
        agent = session.get(Agent, row.agent_id)
        assert agent is not None  # a foreign key
        check_scope(agent.name, scope)
        actual = decision.cost_micros if actual_micros is None else actual_micros
        labels = Labels(agent.name, decision.version, decision.arm, decision.stage or "none")
        if decision.outcome_status is not None:
            return _repeat(decision, status=status, actual=actual, latency_ms=latency_ms, labels=labels)
        if decision.verdict != "allow":
            raise Conflict(f"the call was not allowed ({decision.verdict}); there is no outcome to report",
                           field="decision_id")
        overrun = actual - decision.cost_micros if actual > decision.cost_micros else None
        if not store.record_outcome(session, decision_id, status=status, actual_micros=actual,
                                    latency_ms=latency_ms, overrun_micros=overrun, now=now):
            session.refresh(decision)
            return _repeat(decision, status=status, actual=actual, latency_ms=latency_ms, labels=labels)
        # The spend takes the actual cost even past the cap: an overrun is recorded, never absorbed (SPEC §2).
        store.settle(session, row.id, delta_micros=actual - decision.cost_micros)
        tripped = _after_outcome(svc, session, agent, row, decision, now=now)
        session.refresh(decision)
        return Reported(decision, True, tripped, labels)


def _repeat(decision: Decision, *, status: str, actual: int, latency_ms: float | None, labels: Labels) -> Reported:
    same = (decision.outcome_status, decision.actual_cost_micros, decision.latency_ms) == (status, actual, latency_ms)
    if not same:
        raise Conflict(f"decision {decision.id} already has a different outcome", field="status")
    return Reported(decision, False, False, labels)


def _after_outcome(svc: Services, session: Session, agent: Agent, row: AgentSession, decision: Decision, *,
                   now: float) -> bool:
    if row.arm != "candidate" or decision.stage == "twin" or decision.rollout_id is None:
        return False
    return kill_switch.check(session, svc.policies.get(agent.policy), agent, decision.rollout_id, now=now)


# -- end --------------------------------------------------------------------------------------


def end_session(svc: Services, session_id: str, *, scope: str | None, status: str, passed: bool | None,
                now: float) -> dict[str, Any]:
    """Close a session and return its summary; twin scenario runs get their trajectory judged."""
    with svc.db.transaction() as session:
        row = store.get_session(session, session_id)
        agent = session.get(Agent, row.agent_id)
        assert agent is not None  # a foreign key
        check_scope(agent.name, scope)
        decisions = store.decisions_of(session, session_id)
        trajectory = _trajectory(svc, agent, row, decisions, passed=passed)
        verdict_passed = trajectory["passed"] if trajectory else passed
        if row.status == "open":
            store.end_session(session, session_id, status=status, passed=verdict_passed, now=now)
            store.cancel_session_approvals(session, session_id, reason="the session ended", now=now)
            session.refresh(row)
        if (row.status, row.passed) != (status, verdict_passed):
            raise Conflict(f"session {session_id} already ended as {row.status}", field="status")
        return summary(agent, row, decisions, trajectory)


def _trajectory(svc: Services, agent: Agent, row: AgentSession, decisions: list[Decision], *,
                passed: bool | None) -> dict[str, Any] | None:
    if row.scenario is None:
        return None
    scenario = svc.policies.get(agent.policy).policy.twin.scenarios.get(row.scenario)
    if scenario is None:  # the policy dropped the scenario since the session started
        return {"passed": False, "problems": [f"scenario {row.scenario} is no longer in the policy"]}
    found = judge_trajectory([d.tool for d in decisions], expect=scenario.expect, forbid=scenario.forbid,
                             harness_passed=passed)
    return {"passed": found.passed, "problems": list(found.problems)}


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
