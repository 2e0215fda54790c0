"""The policy view: which policy file and revision governs each agent, and its text."""

from __future__ import annotations

from dataclasses import dataclass

from flask import Blueprint, render_template, request
from flask.typing import ResponseReturnValue
from sqlmodel import Session

from gatekeeper.errors import NotFound
from gatekeeper.services import services
from gatekeeper.store import dashboard_records, rollout_records
from gatekeeper.store.models import Agent, PolicyRevision

bp = Blueprint("policies", __name__)


@dataclass(frozen=True)
class Binding:
    """An agent, its policy, and the revision its rollout's last step ran under."""

    agent: str
    policy: str
    rollout_revision: str | None


@bp.get("/policies")
def policy_view() -> ResponseReturnValue:
    """Show each agent's policy and revision, every loaded policy's text, and load problems."""
    svc = services()
    snapshot = svc.policies.snapshot()
    wanted = request.args.get("revision", "").strip()[:40]
    with svc.db.reading() as db:
        bindings = [_binding(db, agent) for agent in rollout_records.list_agents(db=db)]
        revision = dashboard_records.policy_revision(wanted, db=db) if wanted else None
        stored = _copy(revision) if revision else None
    if wanted and stored is None:
        raise NotFound(f"no stored policy revision {wanted!r}", field="revision")
    return render_template("web/policies.html", bindings=bindings, loaded=snapshot.by_name,
                           problems=snapshot.problems, revision=stored)


def _binding(db: Session, agent: Agent) -> Binding:
    rollout = rollout_records.current_rollout(agent, db=db)
    return Binding(agent.name, agent.policy, rollout.policy_revision if rollout else None)


def _copy(row: PolicyRevision) -> PolicyRevision:
    # A detached copy: the read's rollback would expire the row before the template renders.
    return PolicyRevision(revision=row.revision, name=row.name, path=row.path, text=row.text,
                          first_seen_at=row.first_seen_at)
