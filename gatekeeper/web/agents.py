"""The overview of every agent, the agent page, and the actions a release manager takes there."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, flash, g, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue

from gatekeeper import rollouts
from gatekeeper.api.fields import REASON_MAX
from gatekeeper.api.views import agent_or_404, tier_name
from gatekeeper.core.vocabulary import STAGES
from gatekeeper.errors import BadRequest, NotFound
from gatekeeper.services import services
from gatekeeper.store import dashboard_records, reads, rollout_records
from gatekeeper.store.models import Transition
from gatekeeper.web.history import rollout_charts, timeline
from gatekeeper.web.presenters import ACTIONS, AgentView, actions, agent_view, loaded_or_none
from gatekeeper.web.security import current_user, release_manager_required
from gatekeeper.web.twin_panel import twin_panel

bp = Blueprint("agents", __name__)
MAX_REASON = REASON_MAX  # the reason lands in the rollout's state_reason too
MAX_PAGE = 1_000_000  # far past any history, and its offset still fits every database's integers


@bp.get("/")
def overview() -> ResponseReturnValue:
    """Show one row per agent: versions, ladder, state, health, time at tier, pending approvals."""
    return render_template("web/overview.html", **_overview())


@bp.get("/partials/overview")
def overview_rows() -> ResponseReturnValue:
    """Return the overview's rows alone, for the page's auto-refresh."""
    return render_template("web/_overview_rows.html", **_overview())


@bp.get("/agents/<name>")
def agent_page(name: str) -> ResponseReturnValue:
    """Show an agent: gate checklist, pending approvals, charts, actions and the history timeline."""
    return render_template("web/agent.html", **_agent(name))


@bp.get("/partials/agents/<name>")
def agent_partial(name: str) -> ResponseReturnValue:
    """Return the agent page's body alone, for its auto-refresh."""
    return render_template("web/_agent_body.html", **_agent(name))


def _agent(name: str) -> dict[str, Any]:
    svc = services()
    include_gates = request.args.get("events") == "all"
    with svc.db.reading() as db:
        agent = agent_or_404(db, name)
        view = agent_view(db, agent, policies=svc.policies, now=g.now, with_approvals=True)
        story = timeline(db, agent, policies=svc.policies,
                         page=_page(), include_gates=include_gates)
        rollout = view.status.rollout
        graphs = (rollout_charts(db, rollout, policy=view.policy, now=g.now,
                                 report=None if view.superseded else view.report) if rollout else ())
        decision_ids = reads.decisions_of_approvals([a.id for a in (*view.approvals, *view.decided)], db=db)
        environments = dashboard_records.session_environments([a.session_id for a in view.approvals], db=db)
        twin = twin_panel(db, agent, policy=view.policy, rollout_id=rollout.id if rollout else None,
                          report=view.report, now=g.now)
    user = current_user()
    return {"view": view, "charts": graphs, "timeline": story, "include_gates": include_gates, "twin": twin,
            "decision_ids": decision_ids, "environments": environments,
            "actions": actions(view, can_act=bool(user and user.can_act), now=g.now)}


@bp.post("/agents/<name>/actions/<action>")
@release_manager_required
def act(name: str, action: str) -> ResponseReturnValue:
    """Apply a release manager's action to the agent's rollout, with their reason."""
    labels = dict(ACTIONS)
    if action not in labels:
        raise NotFound(f"no action {action!r}; use one of {', '.join(labels)}", field="action")
    to_stage = (request.form.get("to_stage") or None) if action == "rollback" else None
    if to_stage is not None and to_stage not in STAGES:
        raise BadRequest(f"unknown stage {to_stage!r}", field="to_stage")
    user = current_user()
    entry = rollouts.act(services(), name, action, actor=user.actor if user else "user:?",
                         reason=_reason(), now=services().clock(), to_stage=to_stage)
    flash(f"{labels[action]}: {name} is now at {_where(name, entry)} ({entry.to_state}).", "ok")
    return redirect(url_for(".agent_page", name=name), 303)


def _page() -> int:
    page = request.args.get("page", 1, type=int) or 1
    if not 1 <= page <= MAX_PAGE:
        raise BadRequest(f"page must be between 1 and {MAX_PAGE}", field="page")
    return page


def _reason() -> str:
    reason = request.form.get("reason", "").strip()
    if not reason:
        raise BadRequest("say why: the reason goes into the audit trail", field="reason")
    if len(reason) > MAX_REASON:
        raise BadRequest(f"the reason is longer than {MAX_REASON} characters", field="reason")
    return reason


def _overview() -> dict[str, Any]:
    svc = services()
    with svc.db.reading() as db:
        views = [agent_view(db, a, policies=svc.policies, now=g.now) for a in rollout_records.list_agents(db=db)]
    return {"views": views, "outages": _outages(views),
            "pending_total": sum(v.status.pending_approvals for v in views)}


def _outages(views: list[AgentView]) -> list[AgentView]:
    return [v for v in views if v.active and v.metrics is not None and not v.metrics.available]


def _where(name: str, entry: Transition) -> str:
    svc = services()
    with svc.db.reading() as db:
        loaded = loaded_or_none(svc.policies, agent_or_404(db, name).policy)
    return tier_name(loaded.policy if loaded else None, entry.to_stage, tier=entry.to_tier)
