"""Build realistic rollout histories through the real use cases, with gate reports from the real gates.

Transitions go through `gatekeeper.rollouts` with back-dated `now`; gate evaluations are the
reports of `gatekeeper.core.gates` stored as the scheduler stores them; pending approvals are
rows of a real candidate session, as the hot path opens them.
"""

from __future__ import annotations

import json
import math
import uuid
from dataclasses import replace
from typing import Any

from gatekeeper import rollouts
from gatekeeper.core import tier_gate
from gatekeeper.core.gates import Counters, SourceStatus, Where
from gatekeeper.core.ladder import Tier, tier_label, traffic_percent
from gatekeeper.core.policy import Policy
from gatekeeper.core.tier_gate import TierSignals
from gatekeeper.services import Services
from gatekeeper.store import rollout_records, scrape_records
from gatekeeper.store.models import AgentSession, Approval, Decision, GateEvaluation

MINUTE = 60.0


def start(svc: Services, agent: str, *, policy: str, stable: str, candidate: str, at: float) -> None:
    """Register an agent and start a candidate's rollout at `at`."""
    rollouts.register_agent(svc, agent, policy=policy, stable_version=stable, now=at - 86400)
    rollouts.start_rollout(svc, agent, version=candidate, actor="user:alice",
                           reason=f"ship {candidate}: new refund flow", now=at)


def tier_report(policy: Policy, *, stage: str, tier: int, at: float, tier_started_at: float,
                signals: TierSignals | None, source: SourceStatus | None = None) -> dict[str, Any]:
    """Return the gate report the tier gate gives for these signals."""
    here = Tier(stage, tier)
    where = Where(stage, tier, tier_label(policy, here), traffic_percent(policy, here))
    report = tier_gate.evaluate_tier_gate(policy.canary.gate if stage == "canary" else policy.expansion.gate,
                                      signals, where=where, tier_started_at=tier_started_at,
                                      counters=Counters(), source=source or SourceStatus("prometheus"), now=at)
    return report.as_dict()


def store_report(svc: Services, agent: str, *, report: dict[str, Any]) -> None:
    """Store a gate report as the scheduler does."""
    with svc.db.transaction() as db:
        row = rollout_records.get_agent(agent, db=db)
        rollout = rollout_records.current_rollout(row, db=db)
        assert rollout is not None and rollout.id is not None
        db.add(GateEvaluation(rollout_id=rollout.id, agent_id=row.id or 0, at=report["evaluated_at"],
                              stage=report["stage"], tier=report["tier"], window_key=str(uuid.uuid4()),
                              result=report["result"], report=json.dumps(report),
                              policy_revision=rollout.policy_revision))
        scrape_records.count_evaluations([(row.id or 0, report["result"])], db=db)


def healthy_signals(minute: float, *, scale: float) -> TierSignals:
    """Return plausible candidate numbers that wobble with time and grow with traffic."""
    sessions = 40 * scale + minute * 2.5 * scale
    wobble = math.sin(minute / 4.0)
    calls = sessions * 6
    return TierSignals(sessions=sessions, tool_calls=calls, errors=calls * (0.008 + 0.004 * wobble),
                       p95_latency_s=1.1 + 0.25 * wobble, spend_dollars=sessions * (0.21 + 0.03 * wobble))


def canary_history(svc: Services, agent: str, *, policy: Policy, now: float) -> None:
    """Walk an agent from twin to canary 5% over the last 2.5 hours, with the gate reports on the way."""
    t0 = now - 150 * MINUTE
    rollouts.act(svc, agent, "promote", actor="scheduler", reason="twin gate passed: 52 runs, 100% pass",
                 now=t0 + 25 * MINUTE, metrics={"runs": 52, "pass_rate": 1.0, "scenarios_covered": 1})
    rollouts.act(svc, agent, "promote", actor="user:alice", reason="shadow agreement 96%, looks good",
                 now=t0 + 85 * MINUTE)
    _tier_reports(svc, agent, policy=policy, tier=0, start=t0 + 85 * MINUTE, end=t0 + 130 * MINUTE, scale=1)
    rollouts.act(svc, agent, "promote", actor="scheduler", reason="tier gate passed at canary 1%",
                 now=t0 + 130 * MINUTE,
                 metrics={"error_rate": 0.009, "p95_latency_s": 1.21, "cost_per_session": 0.22, "sessions": 152})
    _tier_reports(svc, agent, policy=policy, tier=1, start=t0 + 130 * MINUTE, end=now - 30, scale=5)


def _tier_reports(svc: Services, agent: str, *, policy: Policy, tier: int, start: float, end: float,
                  scale: float) -> None:
    at = start + 2 * MINUTE
    while at <= end:
        minute = (at - start) / MINUTE
        signals = healthy_signals(minute, scale=scale)
        if tier == 0 and 14 <= minute < 17:  # one spike the gate caught, visible above the limit line
            signals = replace(signals, errors=(signals.tool_calls or 0) * 0.031)
        store_report(svc, agent, report=tier_report(policy, stage="canary", tier=tier, at=at, tier_started_at=start,
                                             signals=signals))
        at += 2 * MINUTE


def open_approval(svc: Services, agent: str, *, tool: str, tool_class: str, cost: float, preview: str,
                  at: float, expire_after: float = 15 * MINUTE, arguments: dict[str, Any] | None = None) -> str:
    """Open a pending approval on a fresh candidate session of `agent`, as the hot path does."""
    with svc.db.transaction() as db:
        row = rollout_records.get_agent(agent, db=db)
        rollout = rollout_records.current_rollout(row, db=db)
        assert rollout is not None
        live = AgentSession(id=uuid.uuid4().hex, agent_id=row.id or 0, rollout_id=rollout.id,
                            version=rollout.candidate_version, arm="candidate", stage=rollout.stage,
                            environment="live", session_key=uuid.uuid4().hex, cap_tool_calls=20,
                            cap_spend_micros=500_000, started_at=at - 40)
        db.add(live)
        db.flush()
        approval = Approval(id=uuid.uuid4().hex, agent_id=row.id or 0, session_id=live.id, rollout_id=rollout.id,
                            version=rollout.candidate_version, tool=tool, tool_class=tool_class,
                            cost_micros=round(cost * 1_000_000), preview=preview, created_at=at,
                            expires_at=at + expire_after, stage=rollout.stage,
                            arguments=json.dumps(arguments, sort_keys=True) if arguments is not None else None)
        db.add(approval)
        return approval.id


def live_session(svc: Services, agent: str, *, at: float, arm: str = "candidate", mirror_of: str | None = None,
                 stage: str | None = None, status: str = "open") -> str:
    """Open a live session of `agent` on its current rollout, as the hot path does; return its id."""
    with svc.db.transaction() as db:
        row = rollout_records.get_agent(agent, db=db)
        rollout = rollout_records.current_rollout(row, db=db)
        assert rollout is not None
        version = rollout.candidate_version if arm == "candidate" else (row.stable_version or "")
        live = AgentSession(id=uuid.uuid4().hex, agent_id=row.id or 0, rollout_id=rollout.id, version=version,
                            arm=arm, stage=stage or rollout.stage, environment="live",
                            session_key=uuid.uuid4().hex, cap_tool_calls=20, cap_spend_micros=500_000,
                            mirror_of=mirror_of, status=status, started_at=at,
                            ended_at=at + 60 if status != "open" else None)
        db.add(live)
        return live.id


def record_call(svc: Services, session_id: str, *, tool: str, tool_class: str, verdict: str, at: float,
                cost: float = 0.01, arguments: dict[str, Any] | None = None, reason: str = "",
                outcome: tuple[str, float, float] | None = None, approval_id: str | None = None) -> str:
    """Store one decision of a session (arguments as the hot path stores them: redacted JSON text).

    `outcome` is (status, actual cost in dollars, latency in ms); an actual cost above `cost` is an overrun.
    """
    with svc.db.transaction() as db:
        live = db.get(AgentSession, session_id)
        assert live is not None
        cost_micros = round(cost * 1_000_000)
        row = Decision(id=uuid.uuid4().hex, session_id=session_id, agent_id=live.agent_id,
                       rollout_id=live.rollout_id, version=live.version, arm=live.arm, stage=live.stage, tool=tool,
                       tool_class=tool_class, cost_micros=cost_micros, verdict=verdict, reason=reason or verdict,
                       approval_id=approval_id, at=at,
                       arguments=json.dumps(arguments, sort_keys=True) if arguments is not None else None,
                       arguments_digest=uuid.uuid4().hex * 2 if arguments is not None else None)
        if outcome is not None:
            status, actual, latency = outcome
            actual_micros = round(actual * 1_000_000)
            row.outcome_status, row.actual_cost_micros, row.latency_ms = status, actual_micros, latency
            row.outcome_at = at + latency / 1000
            row.overrun_micros = actual_micros - cost_micros if actual_micros > cost_micros else None
        db.add(row)
        return row.id


def approval_for(svc: Services, session_id: str, *, tool: str, tool_class: str, cost: float, at: float,
                 arguments: dict[str, Any] | None, preview: str | None = None, state: str = "pending",
                 expire_after: float = 15 * MINUTE) -> str:
    """Open an approval for a call of an existing session, with the decision that asked for it."""
    approval_id = uuid.uuid4().hex
    with svc.db.transaction() as db:
        live = db.get(AgentSession, session_id)
        assert live is not None
        db.add(Approval(id=approval_id, agent_id=live.agent_id, session_id=session_id,
                        rollout_id=live.rollout_id, version=live.version, tool=tool, tool_class=tool_class,
                        cost_micros=round(cost * 1_000_000), preview=preview, stage=live.stage,
                        arguments=json.dumps(arguments, sort_keys=True) if arguments is not None else None,
                        state=state, created_at=at, expires_at=at + expire_after,
                        decided_by="gatekeeper" if state == "cancelled" else None,
                        decided_at=at + 30 if state == "cancelled" else None,
                        decision_reason="its session ended" if state == "cancelled" else None))
    record_call(svc, session_id, tool=tool, tool_class=tool_class, verdict="approval_required", at=at, cost=cost,
                arguments=arguments, approval_id=approval_id)
    return approval_id
