"""The session trace page: every call a session asked for, in order, irreversible ones highlighted."""

from __future__ import annotations

from flask import Blueprint, render_template
from flask.typing import ResponseReturnValue

from gatekeeper.api.views import session_trace
from gatekeeper.services import services

bp = Blueprint("traces", __name__)


@bp.get("/sessions/<session_id>")
def trace_page(session_id: str) -> ResponseReturnValue:
    """Show a session's trace; a mirrored pair's stable and candidate traces side by side."""
    with services().db.reading() as db:
        trace = session_trace(db, session_id)
    return render_template("web/session.html", trace=trace)
