"""The approvals queue: tool calls waiting for a person, approved or rejected with a reason."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, flash, g, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue

from gatekeeper import approvals
from gatekeeper.errors import BadRequest, NotFound
from gatekeeper.services import services
from gatekeeper.store import dashboard_records, reads, rollout_records
from gatekeeper.web.security import current_user, release_manager_required

bp = Blueprint("approvals", __name__)
VERDICTS = {"approve": "Approved", "reject": "Rejected"}
MAX_REASON = 1000


@bp.get("/approvals")
def queue() -> ResponseReturnValue:
    """Show every pending approval, irreversible calls first to the eye, and the latest decided ones."""
    return render_template("web/approvals.html", **_queue())


@bp.get("/partials/approvals")
def queue_rows() -> ResponseReturnValue:
    """Return the pending approvals alone, for the page's auto-refresh."""
    return render_template("web/_approval_rows.html", **_queue())


@bp.post("/approvals/<approval_id>/<verdict>")
@release_manager_required
def decide(approval_id: str, verdict: str) -> ResponseReturnValue:
    """Approve or reject one pending call, with the approver's reason."""
    if verdict not in VERDICTS:
        raise NotFound(f"no verdict {verdict!r}; approve or reject", field="verdict")
    reason = request.form.get("reason", "").strip()
    if not reason or len(reason) > MAX_REASON:
        raise BadRequest(f"give a reason of 1 to {MAX_REASON} characters", field="reason")
    user = current_user()
    decide_one = approvals.approve if verdict == "approve" else approvals.reject
    row = decide_one(services(), approval_id, actor=user.actor if user else "user:?", reason=reason,
                     now=services().clock())
    flash(f"{VERDICTS[verdict]} {row.tool} (approval {row.id}).", "ok")
    return redirect(_back(), 303)


def _back() -> str:
    wanted = request.form.get("next", "")
    # Only paths on this site: an absolute or protocol-relative URL would be an open redirect.
    if wanted.startswith("/") and not wanted.startswith("//") and "\\" not in wanted:
        return wanted
    return url_for(".queue")


def _queue() -> dict[str, Any]:
    svc = services()
    # pending() marks the approvals that ran out as expired while it reads, hence a transaction.
    with svc.db.transaction() as db:
        waiting = approvals.pending(db, now=g.now)
        names = rollout_records.agent_names(db=db)
        environments = dashboard_records.session_environments([a.session_id for a in waiting], db=db)
        decided = dashboard_records.recent_decided_approvals(db=db)
        decision_ids = reads.decisions_of_approvals([a.id for a in [*waiting, *decided]], db=db)
    return {"waiting": waiting, "decided": decided, "names": names, "environments": environments,
            "decision_ids": decision_ids}
