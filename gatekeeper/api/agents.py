"""Release-manager routes: agents, rollouts, transitions and history (SPEC §5)."""

from __future__ import annotations

from flask import Blueprint

from gatekeeper import rollouts
from gatekeeper.api.auth import ACTORS, READERS, Caller
from gatekeeper.api.routing import endpoint
from gatekeeper.api.schemas import (
    ActionBody,
    AgentCreate,
    AgentStatus,
    HistoryPage,
    HistoryQuery,
    PromoteBody,
    RollbackBody,
    RolloutCreate,
    StableBody,
    StableChangeView,
    TransitionView,
    utc,
)
from gatekeeper.api.views import agent_or_404, describe_agent, history_entries
from gatekeeper.services import services
from gatekeeper.store import rollout_records
from gatekeeper.store.models import Transition

bp = Blueprint("agents", __name__)


@endpoint(bp, "/v1/agents", methods=["GET"], roles=READERS, response=list[AgentStatus])
def list_agents(*, caller: Caller) -> list[AgentStatus]:
    """List every agent with its rollout and gate report."""
    svc = services()
    with svc.db.reading() as db:
        return [describe_agent(db, svc.policies, a, now=svc.clock()) for a in rollout_records.list_agents(db=db)]


@endpoint(bp, "/v1/agents", methods=["POST"], roles=ACTORS, body=AgentCreate, response=AgentStatus, status=201)
def register_agent(*, caller: Caller, body: AgentCreate) -> AgentStatus:
    """Register an agent bound to a policy."""
    svc = services()
    rollouts.register_agent(svc, body.name, policy=body.policy, stable_version=body.stable_version,
                            now=services().clock())
    return _status(body.name)


@endpoint(bp, "/v1/agents/<agent>", methods=["GET"], roles=READERS, response=AgentStatus)
def get_agent(agent: str, *, caller: Caller) -> AgentStatus:
    """Show one agent: rollout, ladder, allowed actions, newest gate report."""
    return _status(agent)


@endpoint(bp, "/v1/agents/<agent>/stable", methods=["POST"], roles=ACTORS, body=StableBody,
          response=StableChangeView)
def set_stable(agent: str, *, caller: Caller, body: StableBody) -> StableChangeView:
    """Set the stable version while no rollout is in progress (bootstrapping an agent registered without one)."""
    _exists(agent)
    change = rollouts.set_stable(services(), agent, version=body.version, actor=caller.actor, reason=body.reason,
                                 now=services().clock())
    return StableChangeView(agent=agent, from_version=change.from_version, to_version=change.to_version,
                            actor=change.actor, reason=change.reason, at=utc(change.at), status=_status(agent))


@endpoint(bp, "/v1/agents/<agent>/rollouts", methods=["POST"], roles=ACTORS, body=RolloutCreate,
          response=TransitionView, status=201)
def start_rollout(agent: str, *, caller: Caller, body: RolloutCreate) -> TransitionView:
    """Start a candidate version at twin."""
    _exists(agent)
    entry = rollouts.start_rollout(services(), agent, version=body.version, actor=caller.actor,
                                   reason=body.reason, now=services().clock())
    return _transition_view(agent, entry)


@endpoint(bp, "/v1/agents/<agent>/promote", methods=["POST"], roles=ACTORS, body=PromoteBody,
          response=TransitionView)
def promote(agent: str, *, caller: Caller, body: PromoteBody) -> TransitionView:
    """Advance one tier, or complete the rollout with `full`."""
    return _act(agent, "promote_full" if body.full else "promote", caller, body.reason)


@endpoint(bp, "/v1/agents/<agent>/rollback", methods=["POST"], roles=ACTORS, body=RollbackBody,
          response=TransitionView)
def rollback(agent: str, *, caller: Caller, body: RollbackBody) -> TransitionView:
    """Roll back one tier, or to the start of an earlier stage; the rollout pauses there."""
    return _act(agent, "rollback", caller, body.reason, to_stage=body.to_stage)


def _simple_action(action: str, doc: str) -> None:
    def view(agent: str, *, caller: Caller, body: ActionBody) -> TransitionView:
        return _act(agent, action, caller, body.reason)

    view.__name__, view.__doc__ = action, doc
    endpoint(bp, f"/v1/agents/<agent>/{action}", methods=["POST"], roles=ACTORS, body=ActionBody,
             response=TransitionView)(view)


_simple_action("pause", "Pause the rollout; gates stop moving it until a person resumes it.")
_simple_action("resume", "Resume a paused, held or killed rollout.")
_simple_action("kill", "Kill the candidate: deny its calls and revert per the policy's kill switch.")
_simple_action("abort", "Abort the rollout; the stable version keeps all traffic.")


@endpoint(bp, "/v1/agents/<agent>/history", methods=["GET"], roles=READERS, query=HistoryQuery,
          response=HistoryPage)
def history(agent: str, *, caller: Caller, query: HistoryQuery) -> HistoryPage:
    """Every transition and gate evaluation, newest first, paginated with limit and offset."""
    kinds = ("transition", "gate_evaluation") if query.kind == "all" else (query.kind,)
    with services().db.reading() as db:
        row = agent_or_404(db, agent)
        entries, total = rollout_records.history(row.id or 0, limit=query.limit, offset=query.offset,
                                                 kinds=kinds, db=db)
        return HistoryPage(items=history_entries(db, services().policies, row, entries), total=total,
                           limit=query.limit, offset=query.offset)


def _act(agent: str, action: str, caller: Caller, reason: str, *, to_stage: str | None = None
         ) -> TransitionView:
    _exists(agent)
    entry = rollouts.act(services(), agent, action, actor=caller.actor, reason=reason, now=services().clock(),
                         to_stage=to_stage)
    return _transition_view(agent, entry)


def _exists(agent: str) -> None:
    with services().db.reading() as db:
        agent_or_404(db, agent)


def _status(agent: str) -> AgentStatus:
    svc = services()
    with svc.db.reading() as db:
        return describe_agent(db, svc.policies, agent_or_404(db, agent), now=svc.clock())


def _transition_view(agent: str, entry: Transition) -> TransitionView:
    svc = services()
    with svc.db.reading() as db:
        item = history_entries(db, svc.policies, agent_or_404(db, agent), [entry])[0]
    return TransitionView(agent=agent, transition=item, status=_status(agent))
