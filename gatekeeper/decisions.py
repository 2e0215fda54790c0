"""Decision use cases: decide one tool call, and settle its outcome (tripping the kill switch).

`decide` is the hot path: it runs on the raw connection of gatekeeper.store.hot_path, one
transaction (`tx`) that loads the session's facts, asks the pure core (core/verdicts.py) for the
verdict, makes the one atomic reservation and records the decision. The common call goes at once
(`_at_once`): judged on the session's facts as this process last read them, recorded by statements
that check them (store/at_once_statements.py: one round trip on Postgres; on SQLite the
reservation checks them, saving the read); the transaction answers whatever they refuse.
`report_outcome` is one short transaction on the same connection: it settles the decision and the
session's spend and counts a live candidate outcome in the kill switch's buckets
(store/outcome_statements.py); only a report that crosses the threshold goes on to the ORM unit of
work (`db`) to trip it (kill_switch.py).
Both return plain results the API adapter renders and counts. Both take `mark=`, the token
revocation mark the caller was authenticated at, and check it in their transaction (api/auth.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from gatekeeper import kill_switch
from gatekeeper.core import chaos
from gatekeeper.core.arguments import Bound, bind, digest
from gatekeeper.core.budgets import cap_reason, remaining, to_dollars
from gatekeeper.core.chaos import Injection
from gatekeeper.core.kill_rule import trips
from gatekeeper.core.policy import Caps, Policy
from gatekeeper.core.sequence import relevant_tools
from gatekeeper.core.verdicts import Call, Verdict, after_reservation, effective_stage, judge, message
from gatekeeper.core.vocabulary import LIVE_STATES
from gatekeeper.errors import BadRequest, Conflict
from gatekeeper.services import Services
from gatekeeper.sessions import Labels, check_scope, new_id
from gatekeeper.store import at_once_statements, decision_statements, outcome_statements, rollout_records
from gatekeeper.store.decision_statements import FirstAnswer, SessionFacts
from gatekeeper.store.hot_path import Tx
from gatekeeper.store.outcome_statements import OutcomeFacts
from gatekeeper.token_cache import check_mark

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
    chaos: Injection | None = None  # a candidate's twin session's allowed call: what to inject (core/chaos.py)


def decide(svc: Services, ask: Ask, *, scope: str | None, now: float, mark: int | None = None) -> Decided:
    """Return the verdict on one tool call, reserving its call and cost atomically when it may run."""
    try:
        done = _at_once(svc, ask, scope=scope, now=now, mark=mark)
        if done is not None:
            return done
        with svc.hot.transaction() as tx:
            facts = decision_statements.load_session(tx, ask.session_id)
            _remember(svc, facts)
            check_mark(mark, facts.mark)
            check_scope(facts.agent, scope)
            policy = svc.policies.get(facts.policy).policy
            first = (decision_statements.first_answer(tx, facts.id, ask.request_id)
                     if ask.request_id is not None else None)
            if first is not None:
                return _with_chaos(policy, facts, ask.tool, _replay(policy, facts, ask, first))
            if facts.status != "open":
                raise Conflict(f"session {ask.session_id} has ended ({facts.status})", field="session_id")
            bound = bind(ask.arguments, redact_fields=policy.approvals.redact) if ask.arguments is not None else None
            call = _call(tx, policy, facts, ask, bound, now=now)
            verdict, used = _reserve(tx, facts, ask, judge(policy, call))
            done = _record(tx, policy, facts, ask, call, verdict, bound, used=used, now=now)
            return _with_chaos(policy, facts, ask.tool, done)
    except Exception as exc:
        if ask.request_id is None or not decision_statements.is_duplicate(exc):
            raise
        # A concurrent retry of the same request committed first: its answer is this one's.
        return _replay_committed(svc, ask, scope=scope, error=exc)


def _at_once(svc: Services, ask: Ask, *, scope: str | None, now: float, mark: int | None) -> Decided | None:
    """Decide without reading the session if its facts are as last read; None: the long way.

    The verdict is judged on the predicted facts; the statement records it only if they still hold. A call
    that needs more than the session's row (sequence rules, approvals) or a cap that refuses goes the long way;
    on SQLite so do verdicts that reserve nothing and retries with a request id (Postgres takes them at once).
    """
    predicted = svc.hot.predicted.get(ask.session_id)
    if (predicted is None or predicted.status != "open" or ask.approval_id is not None
            or scope not in (None, predicted.agent)):
        return None
    policy = svc.policies.get(predicted.policy).policy
    if relevant_tools(policy.sequence_rules, ask.tool):
        return None
    try:
        bound = bind(ask.arguments, redact_fields=policy.approvals.redact) if ask.arguments is not None else None
    except ValueError:
        return None  # the long way refuses them, after what it checks first
    call = _call_of(policy, predicted, ask.tool, ran={}, approval=None, room="")
    verdict = judge(policy, call)
    wide = bound is not None or ask.request_id is not None
    if verdict.verdict == "approval_required" or verdict.consume_approval or (wide and not verdict.reserve):
        return None
    if not svc.hot.postgres and (not verdict.reserve or ask.request_id is not None):
        return None
    # Counters are not predicted. A reserving verdict is recorded only if the reservation succeeds, which is
    # exactly when no cap refuses: the call as judged. Any other must not read them (a shadow call an approval
    # would gate does).
    if not verdict.reserve and judge(policy, call._replace(cap_reason="cap_tool_calls")) != verdict:
        return None
    stage = stage_label(call)
    decision_id = new_id()
    row = _row(predicted, ask, call, verdict, bound, decision_id=decision_id, stage=stage, approval_id=None, now=now)
    got = (at_once_statements.decide_at_once(ask.session_id, hot=svc.hot, predicted=predicted, row=row,
                                             reserve=verdict.reserve, mark=mark) if svc.hot.postgres else
           at_once_statements.reserve_as_predicted(ask.session_id, hot=svc.hot, predicted=predicted, row=row,
                                                   mark=mark))
    if got is None:
        svc.hot.predicted.pop(ask.session_id, None)
        return None
    _remember(svc, got.facts)
    if got.first is not None:
        check_mark(mark, got.facts.mark)
        check_scope(got.facts.agent, scope)
        policy = svc.policies.get(got.facts.policy).policy
        return _with_chaos(policy, got.facts, ask.tool, _replay(policy, got.facts, ask, got.first))
    if not got.recorded:
        return None  # the facts moved, the session ended, or the caps refuse: the long way answers
    caps = caps_of(predicted)
    used = got.reserved or (got.facts.tool_calls, got.facts.spend_micros)
    calls, micros = remaining(caps, tool_calls=used[0], spend_micros=used[1])
    text = message(verdict.reason, policy=policy, tool=ask.tool, caps=caps, approval_id=None)
    done = Decided(decision_id, verdict, calls, micros, None, Labels(predicted.agent, predicted.version,
                                                                       predicted.arm, stage), text)
    return _with_chaos(policy, got.facts, ask.tool, done)


def _remember(svc: Services, facts: SessionFacts) -> None:
    """Keep a session's facts as read, the next decision's prediction (a few thousand sessions at most)."""
    if len(svc.hot.predicted) >= 4096:
        svc.hot.predicted.clear()
    svc.hot.predicted[facts.id] = facts


def _replay_committed(svc: Services, ask: Ask, *, scope: str | None, error: Exception) -> Decided:
    assert ask.request_id is not None  # only retries get here
    with svc.hot.transaction() as tx:
        facts = decision_statements.load_session(tx, ask.session_id)
        check_scope(facts.agent, scope)
        first = decision_statements.first_answer(tx, facts.id, ask.request_id)
        if first is None:
            raise error
        policy = svc.policies.get(facts.policy).policy
        return _with_chaos(policy, facts, ask.tool, _replay(policy, facts, ask, first))


def _with_chaos(policy: Policy, facts: SessionFacts, tool: str, done: Decided) -> Decided:
    """Add what to inject into an allowed call of a candidate's twin session, drawn from its seed and call index."""
    if done.verdict.verdict != "allow" or facts.environment != "twin" or facts.arm != "candidate":
        return done
    settings = chaos.settings_for(policy.twin.chaos, tool=tool, tool_class=policy.tool_class(tool))
    index = facts.cap_tool_calls - done.remaining_calls  # the reserved call count: this call's place in the session
    return done._replace(chaos=chaos.inject(settings, seed=facts.seed, tool=tool, index=index))


def _replay(policy: Policy, facts: SessionFacts, ask: Ask, first: FirstAnswer) -> Decided:
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
        decision_statements.lock_session(tx, facts.id)
    caps = caps_of(facts)
    room = cap_reason(caps, tool_calls=facts.tool_calls, spend_micros=facts.spend_micros,
                      cost_micros=ask.cost_micros)
    approval = _approval_state(tx, facts, ask, bound, now=now) if ask.approval_id is not None else None
    return _call_of(policy, facts, ask.tool, ran=decision_statements.ran_counts(tx, facts.id, tools) if tools else {},
                    approval=approval, room=room)


def _call_of(policy: Policy, facts: SessionFacts, tool: str, *, ran: Mapping[str, int], approval: str | None,
             room: str) -> Call:
    return Call(arm=facts.arm, environment=facts.environment, mirror=facts.mirror,
                rollout_stage=facts.rollout_stage, rollout_state=facts.rollout_state, tool=tool,
                tool_class=policy.tool_class(tool), ran=ran, approval=approval, cap_reason=room)


def caps_of(facts: SessionFacts) -> Caps:
    """Return the caps fixed on a session at start."""
    return Caps(facts.cap_tool_calls, facts.cap_spend_micros)


def _approval_state(tx: Tx, facts: SessionFacts, ask: Ask, bound: Bound | None, *, now: float) -> str:
    """Check the approval sent with a repeated call; a mismatch is the caller's mistake (4xx)."""
    found = decision_statements.load_approval(tx, ask.approval_id or "")
    if found is None or found.session_id != facts.id:
        raise BadRequest(f"no approval {ask.approval_id!r} for this session", field="approval_id")
    if found.tool != ask.tool:
        raise BadRequest(f"approval {ask.approval_id} is for tool {found.tool!r}", field="approval_id")
    if ask.cost_micros > found.cost_micros:
        raise BadRequest(f"the approval covers at most {to_dollars(found.cost_micros):g} dollars", field="cost")
    if found.arguments_digest != (bound.digest if bound else None):
        return "changed"  # an approval binds exactly the arguments it was asked for (SPEC §2)
    if found.state == "pending" and now >= found.expires_at:
        decision_statements.expire_approval(tx, found.id)
        return "expired"
    return "used" if found.state == "approved" and found.consumed else found.state


def _reserve(tx: Tx, facts: SessionFacts, ask: Ask, verdict: Verdict) -> tuple[Verdict, tuple[int, int]]:
    """Make the one atomic reservation the verdict asks for; return the final verdict and counters."""
    used = (facts.tool_calls, facts.spend_micros)
    if not verdict.reserve:
        return verdict, used
    got = decision_statements.reserve(tx, facts.id, cost_micros=ask.cost_micros)
    if got is not None:
        return after_reservation(verdict, reserved=True, cap_reason=""), got
    used = decision_statements.counters(tx, facts.id)
    reason = cap_reason(caps_of(facts), tool_calls=used[0], spend_micros=used[1], cost_micros=ask.cost_micros)
    return after_reservation(verdict, reserved=False, cap_reason=reason or "cap_tool_calls"), used


def _record(tx: Tx, policy: Policy, facts: SessionFacts, ask: Ask, call: Call, verdict: Verdict,
            bound: Bound | None, *, used: tuple[int, int], now: float) -> Decided:
    if verdict.consume_approval and verdict.verdict == "allow" and ask.approval_id is not None:
        decision_statements.consume_approval(tx, ask.approval_id, now=now)  # the row is locked (or BEGIN IMMEDIATE)
    approval_id = ask.approval_id if verdict.verdict == "approval_required" or verdict.consume_approval else None
    stage = stage_label(call)
    if verdict.open_approval:
        approval_id = _open_approval(tx, policy, facts, ask, bound, tool_class=call.tool_class, now=now)
    decision_id = new_id()
    caps = caps_of(facts)
    calls, micros = remaining(caps, tool_calls=used[0], spend_micros=used[1])
    row = _row(facts, ask, call, verdict, bound, decision_id=decision_id, stage=stage, approval_id=approval_id,
               now=now)
    if "request_id" in row:
        row.update(remaining_tool_calls=calls, remaining_spend_micros=micros)
    decision_statements.insert_decision(tx, row)
    text = message(verdict.reason, policy=policy, tool=ask.tool, caps=caps, approval_id=approval_id)
    return Decided(decision_id, verdict, calls, micros, approval_id,
                   Labels(facts.agent, facts.version, facts.arm, stage), text)


def _row(facts: SessionFacts, ask: Ask, call: Call, verdict: Verdict, bound: Bound | None, *, decision_id: str,
         stage: str, approval_id: str | None, now: float) -> dict[str, Any]:
    """Return a decision's row; arguments and a request id widen it (the remaining budget is the caller's)."""
    row = {
        "id": decision_id, "session_id": facts.id, "agent_id": facts.agent_id, "rollout_id": facts.rollout_id,
        "version": facts.version, "arm": facts.arm, "stage": stage, "tool": ask.tool,
        "tool_class": call.tool_class, "cost_micros": ask.cost_micros, "verdict": verdict.verdict,
        "reason": verdict.reason, "would_verdict": verdict.would_verdict, "would_reason": verdict.would_reason,
        "approval_id": approval_id, "preview": ask.preview, "at": now}
    if bound is not None or ask.request_id is not None:
        row.update(arguments=bound.redacted if bound else None, arguments_digest=bound.digest if bound else None,
                   request_id=ask.request_id)
    return row


def stage_label(call: Call) -> str:
    """Return the stage a decision is recorded and counted under."""
    stage = effective_stage(call)
    return "twin" if stage == "twin_session" else (stage or "none")


def _open_approval(tx: Tx, policy: Policy, facts: SessionFacts, ask: Ask, bound: Bound | None, *,
                   tool_class: str, now: float) -> str:
    approval_id = new_id()
    decision_statements.insert_approval(tx, {
        "id": approval_id, "agent_id": facts.agent_id, "session_id": facts.id, "rollout_id": facts.rollout_id,
        "version": facts.version, "tool": ask.tool, "tool_class": tool_class, "cost_micros": ask.cost_micros,
        "preview": ask.preview, "stage": facts.rollout_stage, "arguments": bound.redacted if bound else None,
        "arguments_digest": bound.digest if bound else None, "created_at": now,
        "expires_at": now + policy.approvals.expire_after_s})
    return approval_id


# -- outcome ----------------------------------------------------------------------------------


class Settled(NamedTuple):
    """A decision's outcome as stored (a tuple: built per report)."""

    id: str
    tool_class: str
    outcome_status: str
    actual_cost_micros: int
    latency_ms: float | None
    overrun_micros: int | None


@dataclass(frozen=True)
class Reported:
    """A settled outcome; `first` is False for an idempotent repeat. `decision.overrun_micros` is set when
    the actual cost exceeded the reservation."""

    decision: Settled
    first: bool
    kill_switch_tripped: bool
    labels: Labels


def report_outcome(svc: Services, decision_id: str, *, scope: str | None, status: str,
                   actual_micros: int | None, latency_ms: float | None, now: float,
                   mark: int | None = None) -> Reported:
    """Settle an allowed call's reservation with its actual cost; trip the kill switch if it crosses."""
    with svc.hot.transaction() as tx:
        facts = outcome_statements.load_decision(tx, decision_id)
        check_mark(mark, facts.mark)
        check_scope(facts.agent, scope)
        actual = facts.cost_micros if actual_micros is None else actual_micros
        labels = Labels(facts.agent, facts.version, facts.arm, facts.stage or "none")
        if facts.outcome_status is not None:
            return _repeat(facts, status=status, actual=actual, latency_ms=latency_ms, labels=labels)
        if facts.verdict != "allow":
            raise Conflict(f"the call was not allowed ({facts.verdict}); there is no outcome to report",
                           field="decision_id")
        overrun = actual - facts.cost_micros if actual > facts.cost_micros else None
        if not outcome_statements.record_outcome(tx, decision_id, status=status, actual_micros=actual,
                                                 latency_ms=latency_ms, overrun_micros=overrun, now=now):
            # A concurrent report of the same decision committed first (Postgres): compare with it.
            return _repeat(outcome_statements.load_decision(tx, decision_id), status=status, actual=actual,
                           latency_ms=latency_ms, labels=labels)
        # The spend takes the actual cost even past the cap: an overrun is recorded, never absorbed (SPEC §2).
        outcome_statements.settle(tx, facts.session_id, delta_micros=actual - facts.cost_micros)
        crossed = _count(svc, tx, facts, error=status == "error", now=now)
    tripped = crossed and _trip(svc, facts, now=now)
    return Reported(Settled(decision_id, facts.tool_class, status, actual, latency_ms, overrun), True, tripped,
                    labels)


def _repeat(facts: OutcomeFacts, *, status: str, actual: int, latency_ms: float | None,
            labels: Labels) -> Reported:
    same = (facts.outcome_status, facts.actual_cost_micros, facts.latency_ms) == (status, actual, latency_ms)
    if not same:
        raise Conflict(f"decision {facts.id} already has a different outcome", field="status")
    settled = Settled(facts.id, facts.tool_class, status, actual, latency_ms, facts.overrun_micros)
    return Reported(settled, False, False, labels)


def _count(svc: Services, tx: Tx, facts: OutcomeFacts, *, error: bool, now: float) -> bool:
    """Count a live candidate outcome for the kill switch; return whether the window now crosses its threshold."""
    if facts.arm != "candidate" or facts.stage == "twin" or facts.rollout_id is None:
        return False
    policy = svc.policies.get(facts.policy).policy.kill_switch
    outcome_statements.lock_rollout(tx, facts.rollout_id)
    calls, errors = outcome_statements.count_outcome(tx, facts.rollout_id, error=error, window_s=policy.window_s,
                                                     now=now)
    return (facts.rollout_id == facts.agent_rollout_id and facts.rollout_state in LIVE_STATES
            and trips(policy, calls=calls, errors=errors))


def _trip(svc: Services, facts: OutcomeFacts, *, now: float) -> bool:
    """Trip the kill switch in a transaction of its own; False when another report tripped it first."""
    assert facts.rollout_id is not None  # only a counted outcome crosses
    with svc.db.transaction() as db:
        agent = rollout_records.agent_by_id(facts.agent_id, db=db)
        return kill_switch.check(db, svc.policies.get(agent.policy), agent, facts.rollout_id, now=now)
