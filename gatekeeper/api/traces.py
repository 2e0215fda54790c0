"""The session trace: everything a session did, in order, for reviewers and for the agent itself."""

from __future__ import annotations

from flask import Blueprint

from gatekeeper.api.auth import READERS, Caller
from gatekeeper.api.routing import endpoint
from gatekeeper.api.trace_schemas import SessionTrace
from gatekeeper.api.views import session_trace
from gatekeeper.services import services

bp = Blueprint("traces", __name__)


@endpoint(bp, "/v1/sessions/<session_id>", methods=["GET"], roles=("agent", *READERS), response=SessionTrace)
def get_trace(session_id: str, *, caller: Caller) -> SessionTrace:
    """Show a session's decisions in order; a mirrored pair's stable and candidate traces side by side."""
    with services().db.reading() as db:
        trace = session_trace(db, session_id)
    caller.require_agent(trace.session.agent)
    return trace
