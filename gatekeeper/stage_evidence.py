"""The database's evidence for the twin and shadow gates, gathered before the gate's write transaction.

Twin runs and mirrored sessions are read in their own read transaction, for the rollout's
current tier visit (its id and `tier_started_at`); the gate cycle then locks the rollout,
checks that the visit is still the same, and judges. Tier numbers come from the metrics
source, fetched for every agent in one batch before any of this.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlmodel import Session

from gatekeeper import twin_fidelity
from gatekeeper.core.agreement import MirroredPair, agreement
from gatekeeper.core.fidelity import Replay
from gatekeeper.core.gates import ShadowSignals, TwinRun
from gatekeeper.core.policy import Policy
from gatekeeper.core.trajectory import judge
from gatekeeper.store import evidence_records
from gatekeeper.store.db import Database
from gatekeeper.store.models import AgentSession

# Verdict reasons that mean "the policy refused this call": a shadowed call that would have got one
# of them, or a mirrored call that did, is a would-be violation.
VIOLATION_REASONS = frozenset({"cap_tool_calls", "cap_spend", "sequence_before", "sequence_max_calls"})


@dataclass(frozen=True)
class StageEvidence:
    """What the database says about one tier visit: twin runs at twin, mirrored sessions at shadow."""

    twin_runs: tuple[TwinRun, ...] = ()
    shadow: ShadowSignals | None = None
    replays: tuple[Replay, ...] = ()  # the stable version's twin replays of recorded scenarios (fidelity)


def gather(database: Database, policy: Policy, *, stage: str, rollout_id: int, since: float) -> StageEvidence:
    """Read the twin or shadow evidence of a tier visit (nothing for canary and expansion)."""
    if stage not in ("twin", "shadow"):
        return StageEvidence()
    with database.reading() as db:
        if stage == "twin":
            return StageEvidence(twin_runs=tuple(twin_runs(policy, rollout_id=rollout_id, since=since, db=db)),
                                 replays=tuple(twin_fidelity.replays(policy, rollout_id=rollout_id, since=since,
                                                                     db=db)))
        return StageEvidence(shadow=shadow_signals(rollout_id, since=since, db=db))


def twin_runs(policy: Policy, *, rollout_id: int, since: float, db: Session) -> list[TwinRun]:
    """Return the finished twin runs of the candidate since it reached twin."""
    scenarios = policy.twin.scenarios
    return [TwinRun(run.scenario, _run_passed(run, policy, db=db), run.twin_snapshot_at)
            for run in evidence_records.finished_twin_runs(rollout_id, since=since, db=db)
            if not scenarios or run.scenario in scenarios]


def _run_passed(run: AgentSession, policy: Policy, *, db: Session) -> bool:
    if run.passed is not None:  # the hot path judged it when the session ended
        return run.passed
    scenario = policy.twin.scenarios.get(run.scenario or "")
    if scenario is None:
        return run.status == "ok"
    calls = [tool for tool, _ in evidence_records.calls_of([run.id], db=db).get(run.id, [])]
    return run.status == "ok" and judge(calls, expect=scenario.expect, forbid=scenario.forbid).passed


def shadow_signals(rollout_id: int, *, since: float, db: Session) -> ShadowSignals:
    """Return what the candidate's mirrored sessions did since the rollout reached shadow."""
    mirrors = evidence_records.mirrored_sessions(rollout_id, since=since, db=db)
    decisions = evidence_records.decisions_in([m.id for m in mirrors], db=db)
    ended = [m for m in mirrors if m.ended_at is not None]
    agreeing, pairs = agreement(_pairs(ended, db=db))
    outcomes = [d for d in decisions if d.outcome_status is not None]
    return ShadowSignals(
        sessions=len(ended), calls=len(decisions), outcomes=len(outcomes),
        errors=sum(d.outcome_status == "error" for d in outcomes),
        violations=sum(d.would_verdict == "deny" or (d.verdict == "deny" and d.reason in VIOLATION_REASONS)
                       for d in decisions),
        pairs=pairs, agreeing_pairs=agreeing)


def _pairs(mirrors: Sequence[AgentSession], *, db: Session) -> list[MirroredPair]:
    ended_stable = evidence_records.ended_among([m.mirror_of for m in mirrors if m.mirror_of], db=db)
    calls = evidence_records.calls_of([m.id for m in mirrors] + list(ended_stable), db=db)
    return [MirroredPair(calls.get(m.mirror_of or "", []), calls.get(m.id, []))
            for m in mirrors if m.mirror_of in ended_stable]
