"""The database's evidence for the twin and shadow gates, gathered before the gate's write transaction.

Twin runs and mirrored sessions are read in one read transaction for every due tier visit at
once (a rollout's id and `tier_started_at`), a few queries in all whatever the number of
rollouts; the gate cycle then locks the rollouts, checks that each visit is still the same, and
judges. Tier numbers come from the metrics source, fetched for every agent in one batch before
any of this.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
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
from gatekeeper.store.models import AgentSession, Decision

# Verdict reasons that mean "the policy refused this call": a shadowed call that would have got one
# of them, or a mirrored call that did, is a would-be violation.
VIOLATION_REASONS = frozenset({"cap_tool_calls", "cap_spend", "sequence_before", "sequence_max_calls"})


@dataclass(frozen=True)
class StageEvidence:
    """What the database says about one tier visit: twin runs at twin, mirrored sessions at shadow."""

    twin_runs: tuple[TwinRun, ...] = ()
    shadow: ShadowSignals | None = None
    replays: tuple[Replay, ...] = ()  # the stable version's twin replays of recorded scenarios (fidelity)


@dataclass(frozen=True)
class TierVisit:
    """One rollout's stay on its current tier, whose evidence is wanted."""

    rollout_id: int
    stage: str
    since: float
    policy: Policy


def gather(database: Database, policy: Policy, *, stage: str, rollout_id: int, since: float) -> StageEvidence:
    """Read the twin or shadow evidence of one tier visit (nothing for canary and expansion)."""
    found = gather_all(database, [TierVisit(rollout_id, stage, since, policy)])
    return found.get(rollout_id, StageEvidence())


def gather_all(database: Database, visits: Sequence[TierVisit]) -> dict[int, StageEvidence]:
    """Read the twin and shadow evidence of many tier visits in one read transaction, by rollout id."""
    twin = [v for v in visits if v.stage == "twin"]
    shadow = [v for v in visits if v.stage == "shadow"]
    if not twin and not shadow:
        return {}
    with database.reading() as db:
        runs = twin_runs(twin, db=db) if twin else {}
        # Fidelity replays are per visit: only twin visits whose policy has scenarios recorded live from stable.
        replays = {v.rollout_id: tuple(twin_fidelity.replays(v.policy, rollout_id=v.rollout_id, since=v.since, db=db))
                   for v in twin if twin_fidelity.replayable(v.policy)}
        mirrored = shadow_signals_of({v.rollout_id: v.since for v in shadow}, db=db) if shadow else {}
    return {**{rid: StageEvidence(twin_runs=tuple(found), replays=replays.get(rid, ())) for rid, found in runs.items()},
            **{rid: StageEvidence(shadow=signals) for rid, signals in mirrored.items()}}


def twin_runs(visits: Sequence[TierVisit], *, db: Session) -> dict[int, list[TwinRun]]:
    """Return the finished twin runs of each visit's candidate since it reached twin, by rollout id."""
    found = evidence_records.finished_twin_runs({v.rollout_id: v.since for v in visits}, db=db)
    unjudged = [run.id for v in visits for run in found.get(v.rollout_id, [])
                if run.passed is None and (run.scenario or "") in v.policy.twin.scenarios]
    calls = evidence_records.calls_of(unjudged, db=db)
    out = {}
    for visit in visits:
        scenarios = visit.policy.twin.scenarios
        out[visit.rollout_id] = [TwinRun(run.scenario, _run_passed(run, visit.policy, calls), run.twin_snapshot_at)
                                 for run in found.get(visit.rollout_id, [])
                                 if not scenarios or run.scenario in scenarios]
    return out


def _run_passed(run: AgentSession, policy: Policy, calls: Mapping[str, list[tuple[str, str]]]) -> bool:
    if run.passed is not None:  # the hot path judged it when the session ended
        return run.passed
    scenario = policy.twin.scenarios.get(run.scenario or "")
    if scenario is None:
        return run.status == "ok"
    tools = [tool for tool, _ in calls.get(run.id, [])]
    return run.status == "ok" and judge(tools, expect=scenario.expect, forbid=scenario.forbid).passed


def shadow_signals(rollout_id: int, *, since: float, db: Session) -> ShadowSignals:
    """Return what the candidate's mirrored sessions did since the rollout reached shadow."""
    return shadow_signals_of({rollout_id: since}, db=db)[rollout_id]


def shadow_signals_of(since: Mapping[int, float], *, db: Session) -> dict[int, ShadowSignals]:
    """Return what each rollout's mirrored sessions did since it reached shadow: four queries for all."""
    mirrors = evidence_records.mirrored_sessions(since, db=db)
    every = [m for found in mirrors.values() for m in found]
    decisions: dict[str, list[Decision]] = defaultdict(list)
    for decision in evidence_records.decisions_in([m.id for m in every], db=db):
        decisions[decision.session_id].append(decision)
    ended = [m for m in every if m.ended_at is not None]
    ended_stable = evidence_records.ended_among([m.mirror_of for m in ended if m.mirror_of], db=db)
    calls = evidence_records.calls_of([m.id for m in ended] + list(ended_stable), db=db)
    return {rid: _shadow(mirrors.get(rid, []), decisions, calls, ended_stable) for rid in since}


def _shadow(mirrors: Sequence[AgentSession], decisions_of: Mapping[str, list[Decision]],
            calls: Mapping[str, list[tuple[str, str]]], ended_stable: set[str]) -> ShadowSignals:
    decisions = [d for m in mirrors for d in decisions_of.get(m.id, [])]
    ended = [m for m in mirrors if m.ended_at is not None]
    agreeing, pairs = agreement(MirroredPair(calls.get(m.mirror_of or "", []), calls.get(m.id, []))
                                for m in ended if m.mirror_of in ended_stable)
    outcomes = [d for d in decisions if d.outcome_status is not None]
    return ShadowSignals(
        sessions=len(ended), calls=len(decisions), outcomes=len(outcomes),
        errors=sum(d.outcome_status == "error" for d in outcomes),
        violations=sum(d.would_verdict == "deny" or (d.verdict == "deny" and d.reason in VIOLATION_REASONS)
                       for d in decisions),
        pairs=pairs, agreeing_pairs=agreeing)
