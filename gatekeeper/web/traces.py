"""The session trace page: every call a session asked for, in order, irreversible ones highlighted.

A release manager can make a twin scenario of the session from here (POST /sessions/<id>/scenario).
An agent's sessions are listed newest first at /agents/<name>/sessions, each a link to its trace.
"""

from __future__ import annotations

from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue

from gatekeeper import scenarios
from gatekeeper.api.routing import parse_model
from gatekeeper.api.scenario_routes import ScenarioCreate
from gatekeeper.api.trace_schemas import SessionQuery
from gatekeeper.api.traces import agent_session_page
from gatekeeper.api.views import session_trace
from gatekeeper.errors import BadRequest
from gatekeeper.services import services
from gatekeeper.web.security import release_manager_required

bp = Blueprint("traces", __name__)


@bp.get("/sessions/<session_id>")
def trace_page(session_id: str) -> ResponseReturnValue:
    """Show a session's trace; a mirrored pair's stable and candidate traces side by side."""
    with services().db.reading() as db:
        trace = session_trace(db, session_id, policies=services().policies)
    return render_template("web/session.html", trace=trace)


@bp.get("/agents/<name>/sessions")
def sessions_page(name: str) -> ResponseReturnValue:
    """List an agent's sessions, newest first, filtered as the API filters them; each links to its trace."""
    query = parse_model(SessionQuery, {key: value for key, value in request.args.items() if value})
    page = agent_session_page(name, query)
    filters = {key: value for key, value in query.model_dump().items() if value and key not in ("before", "limit")}
    return render_template("web/sessions.html", agent=name, page=page, filters=filters)


@bp.post("/sessions/<session_id>/scenario")
@release_manager_required
def make_scenario(session_id: str) -> ResponseReturnValue:
    """Make a twin scenario from this session, in the scenario file beside its agent's policy."""
    forbid = [tool.strip() for tool in request.form.get("forbid", "").split(",") if tool.strip()]
    try:
        body = ScenarioCreate(name=request.form.get("name", "").strip(), forbid=forbid)
    except ValueError:
        raise BadRequest("a scenario name is letters, digits, '.', '_' or '-' (at most 100)", field="name") from None
    made = scenarios.from_session(services(), session_id, name=body.name, forbid=body.forbid)
    note = f" {made.as_dict()['note']}." if not made.listed else ""
    flash(f"Scenario {made.name} added to {made.file}: expect {', '.join(made.scenario['expect']) or '-'}.{note}",
          "ok")
    return redirect(url_for(".trace_page", session_id=session_id), 303)
