"""Data access for agents, rollouts, transitions and gate evaluations. Nothing here commits."""

from __future__ import annotations

import json
from typing import Any

from sqlmodel import Session, col, func, select

from gatekeeper.errors import NotFound
from gatekeeper.store.models import Agent, GateEvaluation, PolicyRevision, Rollout, Transition, Version


def find_agent(name: str, *, for_update: bool = False, db: Session) -> Agent | None:
    """Return the agent called `name`, locking its row when asked (Postgres), or None."""
    query = select(Agent).where(Agent.name == name)
    if for_update:
        query = query.with_for_update()
    return db.exec(query).first()


def get_agent(name: str, *, for_update: bool = False, db: Session) -> Agent:
    """Return the agent called `name`, or raise NotFound."""
    agent = find_agent(name, for_update=for_update, db=db)
    if agent is None:
        raise NotFound(f"no agent named {name!r}", field="agent")
    return agent


def agent_by_id(agent_id: int, *, db: Session) -> Agent:
    """Return the agent a row refers to (a foreign key: it exists)."""
    agent = db.get(Agent, agent_id)
    if agent is None:
        raise NotFound(f"no agent with id {agent_id}", field="agent")
    return agent


def list_agents(*, db: Session) -> list[Agent]:
    """Return every agent, by name."""
    return list(db.exec(select(Agent).order_by(Agent.name)))


def agent_names(*, db: Session) -> dict[int, str]:
    """Return every agent's name by id."""
    return {agent_id: name for agent_id, name in db.exec(select(Agent.id, Agent.name)) if agent_id}


def current_rollout(agent: Agent, *, for_update: bool = False, db: Session) -> Rollout | None:
    """Return the agent's active rollout, locking its row when asked (Postgres)."""
    if agent.rollout_id is None:
        return None
    query = select(Rollout).where(Rollout.id == agent.rollout_id)
    if for_update:
        query = query.with_for_update()
    return db.exec(query).first()


def locked_rollout(rollout_id: int, *, db: Session) -> Rollout | None:
    """Return a rollout by id with its row locked (Postgres), or None."""
    return db.exec(select(Rollout).where(Rollout.id == rollout_id).with_for_update()).first()


def latest_rollout(agent: Agent, *, db: Session) -> Rollout | None:
    """Return the agent's newest rollout, active or not."""
    query = select(Rollout).where(Rollout.agent_id == agent.id).order_by(col(Rollout.id).desc())
    return db.exec(query).first()


def ensure_version(agent: Agent, label: str, *, now: float, db: Session) -> None:
    """Record a version label of an agent once."""
    exists = db.exec(select(Version).where(Version.agent_id == agent.id, Version.label == label)).first()
    if exists is None:
        db.add(Version(agent_id=row_id(agent.id), label=label, created_at=now))


def remember_revision(*, revision: str, name: str, path: str, text: str, now: float, db: Session) -> None:
    """Store a policy revision's text the first time it governs something."""
    if db.get(PolicyRevision, revision) is None:
        db.add(PolicyRevision(revision=revision, name=name, path=path, text=text, first_seen_at=now))


def latest_evaluation(rollout_id: int, *, db: Session) -> GateEvaluation | None:
    """Return the newest gate evaluation of a rollout (one row read through its (rollout, at) index)."""
    query = (select(GateEvaluation).where(GateEvaluation.rollout_id == rollout_id)
             .order_by(col(GateEvaluation.at).desc(), col(GateEvaluation.id).desc()).limit(1))
    return db.exec(query).first()


def history(agent_id: int, *, limit: int, offset: int, kinds: tuple[str, ...], db: Session
            ) -> tuple[list[Transition | GateEvaluation], int]:
    """Return one page of an agent's transitions and gate evaluations, newest first, and the total.

    Each kind's newest `offset + limit` rows are read in index order and merged here: a page costs
    the same however long the history is (the total is counted on the same indexes).
    """
    tables: dict[str, Any] = {"transition": Transition, "gate_evaluation": GateEvaluation}
    keyed: list[tuple[float, int, str]] = []
    total = 0
    for kind in ("transition", "gate_evaluation"):
        if kind not in kinds:
            continue
        table = tables[kind]
        newest = (select(table.at, table.id).where(table.agent_id == agent_id)
                  .order_by(col(table.at).desc(), col(table.id).desc()).limit(offset + limit))
        keyed += [(at, key, kind) for at, key in db.exec(newest)]
        total += int(db.exec(select(func.count()).select_from(table).where(table.agent_id == agent_id)).one())
    keyed.sort(key=lambda row: (row[0], row[1]), reverse=True)
    return [db.get(tables[kind], key) for _, key, kind in keyed[offset:offset + limit]], total  # type: ignore[misc]


def metrics_of(entry: Transition | GateEvaluation) -> dict[str, Any]:
    """Return the numbers stored with a transition or a gate evaluation."""
    raw = entry.metrics if isinstance(entry, Transition) else entry.report
    loaded: dict[str, Any] = json.loads(raw or "{}")
    return loaded


def row_id(value: int | None) -> int:
    """Return a flushed row's primary key (rows are flushed before their id is used)."""
    if value is None:
        raise RuntimeError("row has no id yet; flush it first")
    return value
