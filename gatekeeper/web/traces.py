"""The session trace page: every call a session asked for, in order, irreversible ones highlighted.

A release manager can make a twin scenario of the session from here (POST /sessions/<id>/scenario).
"""

from __future__ import annotations

from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue

from gatekeeper import scenarios
from gatekeeper.api.scenario_routes import ScenarioCreate
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
