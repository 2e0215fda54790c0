"""The session trace: everything a session did, in order, for reviewers and for the agent itself; and the
listing of an agent's sessions, where a release manager finds a session's id."""

from __future__ import annotations

from flask import Blueprint

from gatekeeper.api.auth import READERS, Caller
from gatekeeper.api.routing import endpoint
from gatekeeper.api.session_views import listed_after
from gatekeeper.api.trace_schemas import SessionPage, SessionQuery, SessionTrace
from gatekeeper.api.views import agent_or_404, session_facts, session_trace
from gatekeeper.services import services
from gatekeeper.store import session_pages

bp = Blueprint("traces", __name__)


@endpoint(bp, "/v1/sessions/<session_id>", methods=["GET"], roles=("agent", *READERS), response=SessionTrace)
def get_trace(session_id: str, *, caller: Caller) -> SessionTrace:
    """Show a session's decisions in order; a mirrored pair's stable and candidate traces side by side."""
    with services().db.reading() as db:
        trace = session_trace(db, session_id, policies=services().policies)
    caller.require_agent(trace.session.agent)
    return trace


@endpoint(bp, "/v1/agents/<agent>/sessions", methods=["GET"], roles=("agent", *READERS), query=SessionQuery,
          response=SessionPage)
def list_sessions(agent: str, *, caller: Caller, query: SessionQuery) -> SessionPage:
    """An agent's sessions, newest first, filtered; page on with `before` set to the answer's `next`."""
    caller.require_agent(agent)
    return agent_session_page(agent, query)


def agent_session_page(agent: str, query: SessionQuery) -> SessionPage:
    """Return one page of an agent's sessions (the API's and the dashboard's listing)."""
    where = session_pages.SessionFilter(environment=query.environment, arm=query.arm, status=query.status,
                                        scenario=query.scenario)
    with services().db.reading() as db:
        row = agent_or_404(db, agent)
        before = listed_after(db, row.id or 0, query.before)
        rows, more = session_pages.agent_sessions(row.id or 0, limit=query.limit, before=before, where=where, db=db)
        items = [session_facts(r, agent) for r in rows]
    return SessionPage(items=items, limit=query.limit, next=more[1] if more else None)
