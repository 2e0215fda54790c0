"""Policy backtest: replay a recorded rollout's traffic through a policy's gates, interval by interval.

The recorded rollout moved through tiers (stage, tier) at the times its transitions say. For
every canary and expansion tier it really held, the replay asks the policy's tier gate, every
`gate.interval` from the moment the tier began, what it would have decided on the traffic recorded
up to then (the built-in source's numbers, `gate.compare` included), carrying its own consecutive
failure counters, and checks the policy's kill switch on the candidate's outcomes in its window.

What the policy would have done is known exactly up to its first different move: a rollback or a
kill ends the replay (the traffic after it was never served that way); a promotion earlier than
the real one is noted and the replay goes on at the real tier, since later traffic only exists
for the path really taken. The kill switch is replayed in shadow too, on the outcomes the hot path
counts; the twin and shadow gates are not (they count runs and mirrored sessions, not a window).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from gatekeeper.core import ladder
from gatekeeper.core.gates import Counters, Where
from gatekeeper.core.kill_rule import trips
from gatekeeper.core.policy import Policy
from gatekeeper.core.tier_gate import evaluate_tier_gate
from gatekeeper.core.vocabulary import GATED_STATES, LIVE_STATES, TRAFFIC_STAGES
from gatekeeper.gate_cycle import gate_for, gated_tiers
from gatekeeper.metric_sources import BuiltinSource
from gatekeeper.store import recorded, rollout_records
from gatekeeper.store.db import Database
from gatekeeper.store.models import Transition
from gatekeeper.tier_signals import SignalRequest

MAX_EVALUATIONS = 100_000  # a bound on one replay, whatever the recorded rollout's length


@dataclass(frozen=True)
class TierStep:
    """A stretch of time the recorded rollout spent at one tier in one state."""

    stage: str
    tier: int
    state: str
    start: float
    end: float


@dataclass(frozen=True)
class Event:
    """One thing that happened, or would have: when, where, what and why."""

    at: float
    tier_label: str  # `canary 25%`, as every view names the tier
    action: str
    reason: str
    state: str = ""  # the rollout's state after a recorded transition


@dataclass(frozen=True)
class Backtest:
    """The replay's moves beside the recorded ones."""

    agent: str
    rollout_id: int
    candidate: str
    policy: str
    revision: str
    evaluations: int
    would: tuple[Event, ...]
    actual: tuple[Event, ...]

    def as_dict(self) -> dict[str, Any]:
        """Return the backtest as `--json` prints it."""
        return {"agent": self.agent, "rollout": self.rollout_id, "candidate": self.candidate,
                "policy": self.policy, "revision": self.revision, "evaluations": self.evaluations,
                "would": [asdict(e) for e in self.would], "actual": [asdict(e) for e in self.actual]}


def backtest(database: Database, policy: Policy, *, agent: str, rollout_id: int | None, now: float) -> Backtest:
    """Replay one recorded rollout of `agent` through `policy` and return both sets of moves."""
    with database.reading() as db:
        row = rollout_records.get_agent(agent, db=db)
        rollout = recorded.recorded_rollout(row, rollout_id=rollout_id, db=db)
        rid, candidate = rollout.id or 0, rollout.candidate_version
        transitions = recorded.transitions_of(rid, db=db)
        last = recorded.last_outcome_at(rid, db=db)
        end = rollout.ended_at or max(last or 0.0, rollout.updated_at) or now
        tier_steps = tier_steps_of(transitions, end=min(end, now))
        actual = tuple(Event(t.at, _label(policy, t.to_stage, t.to_tier), t.action, t.reason, t.to_state)
                       for t in transitions)
    would, evaluations = replay(database, policy, rollout=(rid, candidate), tier_steps=tier_steps)
    return Backtest(agent, rid, candidate, policy.name, policy.revision, evaluations, tuple(would), actual)


def tier_steps_of(transitions: list[Transition], *, end: float) -> list[TierStep]:
    """Cut the recorded rollout into stretches at one tier and state, from its transitions."""
    tier_steps = []
    for index, entry in enumerate(transitions):
        stop = transitions[index + 1].at if index + 1 < len(transitions) else end
        if stop > entry.at:
            tier_steps.append(TierStep(entry.to_stage, entry.to_tier, entry.to_state, entry.at, stop))
    return tier_steps


def replay(database: Database, policy: Policy, *, rollout: tuple[int, str], tier_steps: list[TierStep]
           ) -> tuple[list[Event], int]:
    """Judge every interval of the recorded tier visits; stop at the first rollback or kill."""
    source = BuiltinSource(database)
    events: list[Event] = []
    evaluations, counters, last = 0, Counters(), ("", -1, 0.0)
    for step in tier_steps:
        gated = step.stage in TRAFFIC_STAGES and step.state in GATED_STATES
        if not gated and not (step.stage != "twin" and step.state in LIVE_STATES):  # the kill switch watches shadow too
            continue
        start = last[2] if (step.stage, step.tier) == last[:2] else step.start  # a hold keeps the tier's start
        if (step.stage, step.tier) != last[:2]:
            counters = Counters()
        last = (step.stage, step.tier, start)
        interval = gate_for(policy, step.stage).interval_s
        at, promoted = step.start + interval, False
        while at <= step.end and evaluations < MAX_EVALUATIONS:
            evaluations += 1
            if _killed(database, policy, rollout[0], step, events, at=at):
                return events, evaluations
            if gated:
                stop, counters, promoted = _judge(source, policy, rollout, step, events, at=at, start=start,
                                                  counters=counters, promoted=promoted)
                if stop:
                    return events, evaluations
            at += interval
    return events, evaluations


def _killed(database: Database, policy: Policy, rollout_id: int, step: TierStep, events: list[Event], *,
            at: float) -> bool:
    """Check the kill switch as the hot path does, over the outcomes reported in its window before `at`."""
    switch = policy.kill_switch
    with database.reading() as db:
        calls, errors = recorded.candidate_outcomes_between(rollout_id, since=at - switch.window_s, until=at,
                                                            db=db)
    if not trips(switch, calls=calls, errors=errors):
        return False
    events.append(Event(at, _label(policy, step.stage, step.tier), "kill",
                        f"kill switch: candidate error rate {errors / calls:.1%} over {switch.window_s:g}s "
                        f"({errors}/{calls} calls) is above {switch.max_error_rate:.1%}"))
    return True


def _judge(source: BuiltinSource, policy: Policy, rollout: tuple[int, str], step: TierStep, events: list[Event], *,
           at: float, start: float, counters: Counters, promoted: bool) -> tuple[bool, Counters, bool]:
    gate = gate_for(policy, step.stage)
    tier = ladder.Tier(step.stage, step.tier)
    label = ladder.tier_label(policy, tier)
    percent = ladder.traffic_percent(policy, tier)
    rid, candidate = rollout
    request = SignalRequest("", candidate, rid, gate.window_s, (), tier_started_at=start,
                            compare=gate.compare is not None)
    batch = source.tier_signals([request], now=at)
    report = evaluate_tier_gate(gate, batch.for_request(request), where=Where(step.stage, step.tier, label, percent),
                                tier_started_at=start, counters=counters, source=batch.status, now=at,
                                tiers=gated_tiers(policy))
    reason = "; ".join(report.decision.reasons)
    if report.action == "rollback":
        events.append(Event(at, label, "rollback", reason))
        return True, report.decision.counters, promoted
    if report.action == "promote" and not promoted:
        events.append(Event(at, label, "promote", reason))
        promoted = True
    holding = bool(events) and events[-1].action == "hold" and events[-1].tier_label == label
    if report.action == "hold" and not holding:
        events.append(Event(at, label, "hold", reason))
    elif report.action in ("wait", "promote") and holding:
        events.append(Event(at, label, "release", reason))
    return False, report.decision.counters, promoted


def _label(policy: Policy, stage: str, tier: int) -> str:
    try:
        return ladder.tier_label(policy, ladder.Tier(stage, tier))
    except (IndexError, ValueError):
        return f"{stage} tier {tier}"
