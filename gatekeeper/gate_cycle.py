"""One gate evaluation cycle: judge every due rollout and act on its report, in batches.

For every active rollout that is progressing or held and whose policy interval is due, the
cycle first gathers the stage's evidence, each kind in one batch for every rollout: tier
numbers from the metrics source (one query per metric and window), twin runs and mirrored
sessions from the database (a few queries in one read transaction: see stage_evidence.py).
It asks the pure gates in `core/gates.py` for each rollout's report on that evidence. Only
then does it open write transactions, each for a chunk of at most CHUNK rollouts: lock them,
keep those whose tier visit is unchanged and whose window is not yet evaluated (judging again
the few whose gate counters moved meanwhile), move those whose transition is due through
`rollouts.transition_many` (`rollouts.transition` for many rollouts, with one flush), and store
every report in one insert (GateEvaluation is unique per rollout and window key):

- promote: one tier up, crossing stage boundaries; the last expansion tier completes.
- rollback: one tier down; the rollout pauses there until a person resumes it.
- hold: the state becomes held with the reasons; a held rollout is still evaluated and is
  released by itself once its cause clears (or promoted at once when everything passes).
- wait: nothing to do while the rollout soaks.

Two schedulers evaluating one rollout in one window serialise on the locks, and the second finds
the window evaluated; should the unique key still collide, the chunk, effects included, is rolled
back and its rollouts are stored one transaction each, the loser's alone rolled back: each window
acts at most once. A rollout whose evaluation fails stops only its own gate the same way.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy.exc import IntegrityError, OperationalError

from gatekeeper import stage_evidence
from gatekeeper.core import ladder
from gatekeeper.core.gates import (
    Counters,
    GateReport,
    Limits,
    ShadowSignals,
    SourceStatus,
    Where,
    evaluate_shadow_gate,
    evaluate_twin_gate,
    next_transition,
)
from gatekeeper.core.policy import Policy, TierGate
from gatekeeper.core.tier_gate import evaluate_tier_gate
from gatekeeper.core.vocabulary import GATED_STATES, PREVIEW_STAGES, HoldOwner
from gatekeeper.errors import GatekeeperError, IllegalTransition, NotFound
from gatekeeper.policy_store import LoadedPolicy
from gatekeeper.rollouts import Move, transition_many
from gatekeeper.services import Services
from gatekeeper.stage_evidence import StageEvidence, TierVisit
from gatekeeper.store import evidence_records
from gatekeeper.store.evidence_records import EvaluationRow, GatedRow
from gatekeeper.store.models import Agent, Rollout, Transition
from gatekeeper.tier_signals import MetricsSource, SignalBatch, SignalRequest
from gatekeeper.twin_fidelity import twin_extras

log = logging.getLogger(__name__)

ACTOR = "scheduler"
BUILTIN = SourceStatus("builtin")  # twin runs and mirrored sessions always come from the database
NO_EVIDENCE = StageEvidence()
# Rollouts per write transaction: on SQLite the write lock blocks decisions while it is held, so a
# chunk is kept to a few tens of milliseconds even when every rollout in it moves (CycleTimes.longest_write).
CHUNK = 100


@dataclass(frozen=True)
class Due:
    """A rollout whose gate is due in this cycle, as read before any metrics are fetched."""

    agent: str
    rollout_id: int
    version: str
    stage: str
    tier: int
    tier_started_at: float
    loaded: LoadedPolicy
    window_key: str
    failures: int = 0  # the rollout's gate counters when it was read
    errors: int = 0

    def signal_request(self) -> SignalRequest | None:
        """Return what the tier gate needs from the metrics source (nothing at twin and shadow)."""
        if self.stage not in ("canary", "expansion"):
            return None
        gate = gate_for(self.loaded.policy, self.stage)
        return SignalRequest(self.agent, self.version, self.rollout_id, gate.window_s, gate.queries,
                             tier_started_at=self.tier_started_at, compare=gate.compare is not None)


@dataclass(frozen=True)
class GateOutcome:
    """What one evaluation found and did."""

    agent: str
    rollout_id: int
    stage: str
    tier: int
    result: str
    transition: str | None
    report: dict[str, Any]


@dataclass
class CycleTimes:
    """Seconds one or more cycles spent in each phase, for the scheduler's log and bench/gate_cycle.py."""

    due: float = 0.0  # which rollouts are due
    metrics: float = 0.0  # the metrics source's batch
    evidence: float = 0.0  # twin runs and mirrored sessions
    judge: float = 0.0  # the pure gates, outside any transaction
    write: float = 0.0  # the write transactions, less `act`: lock, check, insert, commit
    act: float = 0.0  # the transitions inside them (rollouts.transition_many)
    transactions: int = 0
    longest_write: float = 0.0  # the longest write transaction, act included: how long decisions may wait

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Add the time spent inside the block to the phase `name`."""
        started = time.perf_counter()
        try:
            yield
        finally:
            setattr(self, name, getattr(self, name) + time.perf_counter() - started)


@dataclass(frozen=True)
class Judged:
    """A due rollout with its report, judged before the write transaction (None: judge inside it)."""

    item: Due
    report: GateReport | None = None
    stored: dict[str, Any] | None = None


def evaluate_all(svc: Services, source: MetricsSource, *, now: float, times: CycleTimes | None = None
                 ) -> list[GateOutcome]:
    """Run one cycle: evaluate every due rollout and act on its report."""
    times = times if times is not None else CycleTimes()
    with times.phase("due"):
        due = due_rollouts(svc, now=now)
    if not due:
        return []
    requests = [r for item in due if (r := item.signal_request()) is not None]
    with times.phase("metrics"):
        batch = source.tier_signals(requests, now=now) if requests else SignalBatch(SourceStatus(source.name))
    with times.phase("evidence"):
        evidence = gather_all(svc, due)
    with times.phase("judge"):
        judged = [found for item in due if item.rollout_id in evidence
                  and (found := _judge_guarded(item, batch, evidence[item.rollout_id], now=now)) is not None]
    outcomes: list[GateOutcome] = []
    for start in range(0, len(judged), CHUNK):
        outcomes.extend(_write_guarded(svc, judged[start:start + CHUNK], batch, evidence, now=now, times=times))
    return outcomes


def gather(svc: Services, item: Due) -> StageEvidence:
    """Read a due rollout's twin or shadow evidence from the database, before any write transaction."""
    return stage_evidence.gather(svc.db, item.loaded.policy, stage=item.stage, rollout_id=item.rollout_id,
                                 since=item.tier_started_at)


def gather_all(svc: Services, due: Sequence[Due]) -> dict[int, StageEvidence]:
    """Read every due rollout's evidence in one batch; if that fails, rollout by rollout, leaving out the broken."""
    try:
        found = stage_evidence.gather_all(svc.db, [TierVisit(d.rollout_id, d.stage, d.tier_started_at, d.loaded.policy)
                                                    for d in due])
    except Exception:  # noqa: BLE001 - one broken rollout must stop only its own gate
        log.exception("gate evidence: the batched read failed; reading rollout by rollout")
        found = {item.rollout_id: read for item in due if item.stage in PREVIEW_STAGES
                 and (read := _gather_guarded(svc, item)) is not None}
        due = [item for item in due if item.stage not in PREVIEW_STAGES or item.rollout_id in found]
    return {item.rollout_id: found.get(item.rollout_id, NO_EVIDENCE) for item in due}


def _gather_guarded(svc: Services, item: Due) -> StageEvidence | None:
    try:
        return gather(svc, item)
    except Exception:  # noqa: BLE001
        log.exception("agent %s: gate evidence could not be read", item.agent)
        return None


def gate_for(policy: Policy, stage: str) -> TierGate:
    """Return the tier gate of a stage; twin and shadow take interval and limits from the top-level gate."""
    if stage == "canary":
        return policy.canary.gate
    if stage == "expansion":
        return policy.expansion.gate
    return policy.gate


def window_key(rollout: Rollout | GatedRow, policy: Policy, *, now: float) -> str:
    """Return the key of the evaluation window `now` falls in, unique per tier visit and interval."""
    interval = max(gate_for(policy, rollout.stage).interval_s, 0.001)
    return f"{rollout.stage}:{rollout.tier}:{rollout.tier_started_at:.0f}:{int(now // interval)}"


def due_rollouts(svc: Services, *, now: float) -> list[Due]:
    """Return the active progressing or held rollouts not yet evaluated in their current window."""
    with svc.db.reading() as db:
        rows = evidence_records.gated_rollouts(db=db, states=sorted(GATED_STATES))
        candidates = [due for row in rows if (due := _due(svc, row, now=now))]
        done = (evidence_records.evaluated_windows([d.rollout_id for d in candidates],
                                                   [d.window_key for d in candidates], db=db)
                if candidates else set())
    return [due for due in candidates if (due.rollout_id, due.window_key) not in done]


def _due(svc: Services, row: GatedRow, *, now: float) -> Due | None:
    try:
        loaded = svc.policies.get(row.policy)
    except NotFound:
        log.error("agent %s: policy %s is not loaded; its rollout is not evaluated", row.agent, row.policy)
        return None
    if now < row.tier_started_at + gate_for(loaded.policy, row.stage).interval_s:
        return None  # a tier gets one whole interval before its first evaluation, never a same-cycle verdict
    return Due(row.agent, row.rollout_id, row.version, row.stage, row.tier, row.tier_started_at, loaded,
               window_key(row, loaded.policy, now=now), row.failures, row.errors)


def _judge_guarded(item: Due, batch: SignalBatch, evidence: StageEvidence, *, now: float) -> Judged | None:
    try:
        report = build_report(item, Counters(item.failures, item.errors), batch, evidence, now=now)
        return Judged(item, report, report.as_dict())
    except GatekeeperError as exc:
        log.error("agent %s: gate evaluation failed: %s", item.agent, exc.message)
    except Exception:  # noqa: BLE001 - one broken rollout must not stop the others' gates
        log.exception("agent %s: gate evaluation failed", item.agent)
    return None


def _write_guarded(svc: Services, chunk: Sequence[Judged], batch: SignalBatch, evidence: Mapping[int, StageEvidence],
                   *, now: float, times: CycleTimes) -> list[GateOutcome]:
    """Store and act on a chunk in one transaction; if that fails, on each of its rollouts in its own."""
    try:
        return _write(svc, chunk, batch, evidence, now=now, times=times)
    except OperationalError as exc:  # locked or unreachable: rollout by rollout would only wait longer
        log.error("gate cycle: a chunk of %d evaluations was not stored (%s); the next cycle retries them",
                  len(chunk), type(exc.orig).__name__ if exc.orig is not None else "OperationalError")
        return []
    except Exception as exc:  # noqa: BLE001 - the chunk is rolled back whole; retry rollout by rollout
        log.warning("gate cycle: a chunk of %d evaluations was rolled back (%s); storing them one by one",
                    len(chunk), type(exc).__name__)
    outcomes = []
    for judged in chunk:
        item = judged.item
        try:
            outcomes.extend(_write(svc, [Judged(item)], batch, evidence, now=now, times=times))
        except IntegrityError:
            log.info("agent %s: window %s was evaluated by another scheduler", item.agent, item.window_key)
        except GatekeeperError as exc:
            log.error("agent %s: gate evaluation failed: %s", item.agent, exc.message)
        except Exception:  # noqa: BLE001 - one broken rollout must not stop the others' gates
            log.exception("agent %s: gate evaluation failed", item.agent)
    return outcomes


def evaluate_one(svc: Services, item: Due, batch: SignalBatch, evidence: StageEvidence, *, now: float
                 ) -> GateOutcome | None:
    """Lock one due rollout, judge it on the gathered evidence, store the report and act, in one transaction."""
    found = _write(svc, [Judged(item)], batch, {item.rollout_id: evidence}, now=now, times=CycleTimes())
    return found[0] if found else None


def _write(svc: Services, chunk: Sequence[Judged], batch: SignalBatch, evidence: Mapping[int, StageEvidence], *,
           now: float, times: CycleTimes) -> list[GateOutcome]:
    """Lock the chunk's rollouts, act where a transition is due and insert every report, in one transaction."""
    started, acting = time.perf_counter(), 0.0
    try:
        with svc.db.transaction() as db:
            ids = [judged.item.rollout_id for judged in chunk]
            locked = evidence_records.lock_rollouts(ids, db=db)
            done = evidence_records.evaluated_windows(ids, {judged.item.window_key for judged in chunk}, db=db)
            # Held for the transaction, so that each transition finds its policy revision without a query.
            revisions = evidence_records.policy_revisions({judged.item.loaded.revision for judged in chunk}, db=db)
            judging: list[tuple[Due, Agent, GateReport, dict[str, Any], Move | None]] = []
            for judged in chunk:
                item = judged.item
                agent, rollout = locked.get(item.rollout_id, (None, None))
                if agent is None or rollout is None or not _unchanged(rollout, item) \
                        or (item.rollout_id, item.window_key) in done:
                    continue  # the tier visit the evidence is about is over, or another scheduler judged it
                report, stored = _report_for(judged, rollout, batch, evidence, now=now)
                judging.append((item, agent, report, stored, plan(item.loaded, agent, rollout, report, metrics=stored)))
            before = time.perf_counter()
            moves = [move for *_, move in judging if move is not None]
            moved = iter(transition_many(db, moves, actor=ACTOR, now=now) if moves else [])
            acting += time.perf_counter() - before
            rows: list[EvaluationRow] = []
            outcomes = []
            for item, agent, report, stored, move in judging:
                taken = _taken(move, next(moved)) if move is not None else None
                stored = {**stored, "transition": taken}
                rows.append(_row(item, agent, report, stored))
                outcomes.append(GateOutcome(item.agent, item.rollout_id, item.stage, item.tier, report.result,
                                            taken, stored))
            evidence_records.insert_evaluations(rows, db=db)
            del revisions
    finally:
        elapsed = time.perf_counter() - started
        times.write += elapsed - acting
        times.act += acting
        times.transactions += 1
        times.longest_write = max(times.longest_write, elapsed)
    return outcomes


def _report_for(judged: Judged, rollout: Rollout, batch: SignalBatch, evidence: Mapping[int, StageEvidence], *,
                now: float) -> tuple[GateReport, dict[str, Any]]:
    """Return the report judged before the transaction, or judge again if the gate counters moved meanwhile."""
    counters = Counters(rollout.consecutive_failures, rollout.consecutive_errors)
    item = judged.item
    if judged.report is not None and judged.stored is not None and counters == Counters(item.failures, item.errors):
        return judged.report, judged.stored
    report = build_report(item, counters, batch, evidence.get(item.rollout_id, NO_EVIDENCE), now=now)
    return report, report.as_dict()


def _unchanged(rollout: Rollout, item: Due) -> bool:
    return (rollout.id == item.rollout_id and rollout.state in GATED_STATES and rollout.stage == item.stage
            and rollout.tier == item.tier and rollout.tier_started_at == item.tier_started_at)


def _row(item: Due, agent: Agent, report: GateReport, stored: Mapping[str, Any]) -> EvaluationRow:
    return EvaluationRow(rollout_id=item.rollout_id, agent_id=agent.id or 0, at=report.evaluated_at,
                         stage=item.stage, tier=item.tier, window_key=item.window_key, result=report.result,
                         report=json.dumps(stored, sort_keys=True), policy_revision=item.loaded.revision)


def build_report(item: Due, counters: Counters, batch: SignalBatch, evidence: StageEvidence, *, now: float
                 ) -> GateReport:
    """Ask the stage's gate for a report on the gathered evidence and the rollout's gate counters."""
    policy = item.loaded.policy
    tier = ladder.Tier(item.stage, item.tier)
    where = Where(item.stage, item.tier, ladder.tier_label(policy, tier), ladder.traffic_percent(policy, tier))
    if item.stage == "twin":
        fidelity, differences = twin_extras(policy, evidence.twin_runs, evidence.replays, now=now)
        return evaluate_twin_gate(policy.twin.gate, list(evidence.twin_runs),
                                  scenarios=list(policy.twin.scenarios), where=where, source=BUILTIN, now=now,
                                  fidelity=fidelity, differences=differences)
    if item.stage == "shadow":
        limits = Limits(policy.gate.failure_limit, policy.gate.error_limit, policy.gate.on_metrics_error)
        return evaluate_shadow_gate(policy.shadow.gate, evidence.shadow or ShadowSignals(), where=where,
                                    stage_started_at=item.tier_started_at, counters=counters,
                                    limits=limits, source=BUILTIN, now=now)
    request = item.signal_request()
    signals = batch.for_request(request) if request else None
    return evaluate_tier_gate(gate_for(policy, item.stage), signals, where=where,
                              tier_started_at=item.tier_started_at, counters=counters,
                              source=batch.status, now=now, tiers=gated_tiers(policy))


def gated_tiers(policy: Policy) -> int:
    """Return how many tiers compare arms (canary and expansion below 100%): `gate.compare` spends alpha over them."""
    return max(1, sum(tier < 100 for tier in (*policy.canary.tiers, *policy.expansion.tiers)))


def plan(loaded: LoadedPolicy, agent: Agent, rollout: Rollout, report: GateReport, *,
         metrics: Mapping[str, Any] | None = None) -> Move | None:
    """Update the rollout's gate counters (and a held rollout's reasons); return the transition due, if any.

    `metrics` is the report as a dict, when the caller has it already.
    """
    failures, errors = report.decision.counters.failures, report.decision.counters.errors
    if (rollout.consecutive_failures, rollout.consecutive_errors) != (failures, errors):
        rollout.consecutive_failures, rollout.consecutive_errors = failures, errors
    reason = _reason(report)
    action = next_transition(rollout.state, rollout.held_by, report.action)
    owner: HoldOwner = "gate" if report.source.available else "outage"
    if action is None:
        if report.action == "hold" and rollout.state == "held" and rollout.held_by != "alert" \
                and (rollout.state_reason, rollout.held_by) != (reason, owner):
            rollout.state_reason, rollout.held_by = reason, owner  # still held, for the newest reasons
        return None
    return Move(loaded, agent, rollout, action, reason, metrics if metrics is not None else report.as_dict(), owner)


def _taken(move: Move, entry: Transition | IllegalTransition) -> str | None:
    """Return the action a move took, or None (logged) if the ladder refused it."""
    if isinstance(entry, IllegalTransition):
        log.warning("agent %s: cannot %s: %s", move.agent.name, move.action, entry.message)
        return None
    return move.action


def _reason(report: GateReport) -> str:
    text = f"{report.gate} gate: " + "; ".join(report.decision.reasons)
    return text if len(text) <= 480 else text[:477] + "..."
