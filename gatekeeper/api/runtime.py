"""Agent-runtime routes: sessions, decisions, outcomes (SPEC §5), and the /metrics exposition."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Flask, Response
from prometheus_client import CONTENT_TYPE_LATEST

from gatekeeper import decisions, sessions
from gatekeeper.api.auth import Caller
from gatekeeper.api.routing import endpoint
from gatekeeper.api.runtime_schemas import (
    CapsView,
    DecisionCreate,
    DecisionView,
    MirrorView,
    OutcomeCreate,
    OutcomeView,
    SessionCreate,
    SessionEnd,
    SessionSummary,
    SessionView,
)
from gatekeeper.core.budgets import to_dollars, to_micros
from gatekeeper.exported_metrics import Metrics
from gatekeeper.services import services
from gatekeeper.store.models import AgentSession

bp = Blueprint("runtime", __name__)
AGENTS = ("agent",)


def register(app: Flask) -> None:
    """Attach the runtime and approval routes."""
    from gatekeeper.api import approvals

    app.register_blueprint(bp)
    app.register_blueprint(approvals.bp)


def metrics() -> Metrics:
    """Return the current app's metrics."""
    return services().metrics


def scope(caller: Caller) -> str | None:
    """Return the agent an agent token is limited to (None for people)."""
    return caller.agent if caller.role == "agent" else None


@endpoint(bp, "/v1/sessions", methods=["POST"], roles=AGENTS, body=SessionCreate, response=SessionView, status=201)
def start_session(*, caller: Caller, body: SessionCreate) -> dict[str, Any]:
    """Start a session: the arm is assigned stickily from the rollout's tier; caps are fixed now."""
    caller.require_agent(body.agent)
    snapshot = body.twin_snapshot_at.timestamp() if body.twin_snapshot_at else None
    started = sessions.start_session(services(), body.agent, session_key=body.session_key,
                                     environment=body.environment, scenario=body.scenario,
                                     twin_snapshot_at=snapshot, seed=body.seed, now=services().clock(),
                                     arm=body.arm)
    for row in filter(None, (started.session, started.mirror)):
        metrics().sessions.labels(started.agent, row.version, row.arm).inc()
    mirror = started.mirror
    view = _session_view(started.agent, started.session)
    view.mirror = MirrorView(session_id=mirror.id, version=mirror.version) if mirror else None
    absent = ({"mirror"} if mirror is None else set()) | ({"seed"} if view.seed is None else set())
    return view.model_dump(mode="json", exclude=absent)


def _session_view(agent: str, row: AgentSession) -> SessionView:
    return SessionView(session_id=row.id, agent=agent, version=row.version, arm=row.arm,  # type: ignore[arg-type]
                       stage=row.stage, environment=row.environment,  # type: ignore[arg-type]
                       caps=CapsView(tool_calls=row.cap_tool_calls, spend=to_dollars(row.cap_spend_micros)),
                       seed=row.seed)


def _observe_decision(seconds: float) -> None:
    metrics().decision_duration.observe(seconds)


@endpoint(bp, "/v1/decisions", methods=["POST"], roles=AGENTS, body=DecisionCreate, response=DecisionView,
          observe=_observe_decision, mark_in_tx=True)
def decide(*, caller: Caller, body: DecisionCreate, mark: int | None) -> dict[str, Any]:
    """Decide one tool call: allow, shadow, deny or approval_required, with a reason and the budget left."""
    ask = decisions.Ask(body.session_id, body.tool, to_micros(body.cost), body.preview, body.approval_id,
                       body.arguments, body.request_id)
    svc = services()
    done = decisions.decide(svc, ask, scope=scope(caller), now=svc.clock(), mark=mark)
    verdict = done.verdict
    if not done.replayed:  # a retry's answer was counted when it was first given
        metrics().count_decision(*done.labels, verdict.verdict, verdict.reason)
    # A plain dict shaped like DecisionView (tests check the two agree): building the model costs per decision.
    view: dict[str, Any] = {"decision_id": done.decision_id, "verdict": verdict.verdict, "reason": verdict.reason,
                            "message": done.message, "remaining": {"tool_calls": done.remaining_calls,
                                          "spend": to_dollars(done.remaining_micros)}}
    if done.approval_id is not None:
        view["approval_id"] = done.approval_id
    if done.chaos is not None:  # an allowed call of a candidate's twin session: null, or the failure to rehearse
        view["chaos"] = done.chaos.as_json()
    return view


@endpoint(bp, "/v1/decisions/<decision_id>/outcome", methods=["POST"], roles=AGENTS, body=OutcomeCreate,
          response=OutcomeView, mark_in_tx=True)
def report_outcome(decision_id: str, *, caller: Caller, body: OutcomeCreate, mark: int | None) -> OutcomeView:
    """Settle an allowed call with its actual cost; idempotent for the same body, 409 for another."""
    actual = None if body.actual_cost is None else to_micros(body.actual_cost)
    done = decisions.report_outcome(services(), decision_id, scope=scope(caller), status=body.status,
                                   actual_micros=actual, latency_ms=body.latency_ms, now=services().clock(),
                                   mark=mark)
    decision, labels = done.decision, done.labels
    if done.first:
        metrics().tool_calls.labels(labels.agent, labels.version, labels.arm, decision.tool_class,
                                    body.status).inc()
        metrics().spend.labels(labels.agent, labels.version, labels.arm).inc(
            to_dollars(decision.actual_cost_micros or 0))
        if body.latency_ms is not None:
            metrics().tool_latency.labels(labels.agent, labels.version, labels.arm).observe(body.latency_ms / 1000)
        if decision.overrun_micros:
            metrics().overruns.labels(labels.agent, labels.version, labels.arm).inc()
    return OutcomeView(decision_id=decision.id, status=decision.outcome_status or body.status,
                       actual_cost=to_dollars(decision.actual_cost_micros or 0), latency_ms=decision.latency_ms,
                       kill_switch_tripped=done.kill_switch_tripped, overrun=to_dollars(decision.overrun_micros or 0))


@endpoint(bp, "/v1/sessions/<session_id>/end", methods=["POST"], roles=AGENTS, body=SessionEnd,
          response=SessionSummary)
def end_session(session_id: str, *, caller: Caller, body: SessionEnd) -> SessionSummary:
    """End a session and return its summary; a twin scenario run says whether its trajectory passed."""
    found = sessions.end_session(services(), session_id, scope=scope(caller), status=body.status,
                                 passed=body.passed, now=services().clock())
    return SessionSummary.model_validate(found)


@endpoint(bp, "/metrics", methods=["GET"], roles=(), media_type=CONTENT_TYPE_LATEST)
def prometheus_metrics(*, caller: Caller) -> Response:
    """Expose every metric of SPEC §6 in the Prometheus text format."""
    svc = services()
    return Response(metrics().render(svc.db, svc.policies), mimetype=CONTENT_TYPE_LATEST)
