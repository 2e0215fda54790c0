"""Fixtures of the gate tests: a fast policy in tmp_path, rollouts placed on any tier, seeded sessions."""

from __future__ import annotations

import copy
import itertools
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml
from flask import Flask
from sqlmodel import SQLModel, select

from gatekeeper import rollouts
from gatekeeper.config import Settings
from gatekeeper.services import Services
from gatekeeper.store import rollout_records
from gatekeeper.store.models import AgentSession, Decision, Rollout
from tests.support.app import svc
from tests.support.services import PostgresServer

T = TypeVar("T", bound=SQLModel)
T0 = 1_700_000_000.0
TOOLS = {"search_kb": "read_only", "lookup_customer": "read_only", "update_ticket": "reversible",
         "refund_payment": "irreversible", "send_email": "irreversible"}
FAST_POLICY: dict[str, Any] = {
    "name": "fast",
    "agents": [],
    "tools": TOOLS,
    "stages": {
        "twin": {"gate": {"min_runs": 4, "min_pass_rate": 0.75, "max_twin_age": "1h"},
                 "scenarios": {"refund-request": {"expect": ["lookup_customer", "refund_payment", "send_email"],
                                                  "forbid": ["update_ticket"]},
                               "faq": {"expect": ["search_kb"]}}},
        "shadow": {"traffic_percent": 100, "gate": {"min_sessions": 3, "soak": "0s", "max_error_rate": 0.2,
                                                    "max_violation_rate": 0.2, "min_agreement": 0.6}},
        "canary": {"tiers": [1, 5], "caps": {"tool_calls_per_session": 20, "spend_per_session": 0.5},
                   "approval_required": []},
        "expansion": {"tiers": [50, 100], "caps": {"tool_calls_per_session": 40, "spend_per_session": 1.0}},
    },
    "stable_caps": {"tool_calls_per_session": 60, "spend_per_session": 2.0},
    "gate": {"interval": "1s", "window": "30s", "soak": "0s", "min_sessions": 3, "max_error_rate": 0.1,
             "max_p95_latency": "2s", "max_cost_per_session": 0.4, "failure_limit": 2,
             "on_metrics_error": "hold", "error_limit": 2},
    "kill_switch": {"window": "60s", "min_calls": 1_000_000, "max_error_rate": 1.0},
    "alerts": {"default": "rollback", "by_severity": {"critical": "kill", "warning": "hold"}},
}


def merged(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """Return `base` with `changes` merged in, nested mappings key by key."""
    out = copy.deepcopy(base)
    for key, value in changes.items():
        out[key] = merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def write_policy(folder: Path, changes: dict[str, Any] | None = None, *, name: str = "fast") -> Path:
    """Write the fast policy (with changes) as `<name>.yaml` into `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(merged(FAST_POLICY, {"name": name, **(changes or {})}), sort_keys=False))
    return path


@pytest.fixture
def policy_changes() -> dict[str, Any]:
    """Changes to the fast policy; override to test other settings."""
    return {}


@pytest.fixture
def policy_dir(tmp_path: Path, policy_changes: dict[str, Any]) -> Path:
    folder = tmp_path / "policies"
    write_policy(folder, policy_changes)
    return folder


@pytest.fixture
def app_overrides(db_url: str, policy_dir: Path) -> dict[str, Any]:
    return {"database_url": db_url, "policy_dir": policy_dir, "policy_reload_s": 0.0}


@pytest.fixture
def services(app: Flask) -> Services:
    return svc(app)


@pytest.fixture
def postgres_services(tmp_path: Path, policy_dir: Path) -> Iterator[Services]:
    """Services on a real, throwaway Postgres with the fast policy."""
    with PostgresServer(tmp_path) as server:
        built = Services.build(Settings(database_url=server.url, policy_dir=policy_dir, policy_reload_s=0.0))
        built.db.upgrade()
        try:
            yield built
        finally:
            built.db.dispose()


def place(services: Services, agent: str = "bot", *, stage: str = "canary", tier: int = 0, now: float = T0,
          policy: str = "fast") -> Rollout:
    """Register an agent with stable v1, start v2 and promote it to (stage, tier) at `now`."""
    rollouts.register_agent(services, agent, policy=policy, stable_version="v1", now=now)
    rollouts.start_rollout(services, agent, version="v2", actor="test", reason="start", now=now)
    while (current := rollout_of(services, agent)).stage != stage or current.tier != tier:
        rollouts.act(services, agent, "promote", actor="test", reason="place", now=now)
    return current


def rows(services: Services, table: type[T]) -> list[T]:
    """Return every row of a table, in id order, detached so they stay readable."""
    with services.db.reading() as db:
        found = list(db.exec(select(table).order_by(table.id)))  # type: ignore[attr-defined]
        db.expunge_all()  # reading() ends in a rollback, which would expire them
        return found


def rollout_of(services: Services, agent: str = "bot") -> Rollout:
    """Return the agent's newest rollout."""
    with services.db.reading() as db:
        found = rollout_records.latest_rollout(rollout_records.get_agent(agent, db=db), db=db)
        assert found is not None
        db.expunge(found)  # reading() ends in a rollback, which would expire it
        return found


_ids = itertools.count(1)


def add_session(services: Services, rollout: Rollout, *, arm: str = "candidate", environment: str = "live",
                calls: Sequence[tuple[Any, ...]] = (), started_at: float = T0, ended: bool = True,
                **fields: Any) -> str:
    """Seed one session with its decisions: calls are (tool, verdict, outcome, latency_ms, extra fields)."""
    session_id = fields.pop("id", f"s{next(_ids)}")
    with services.db.transaction() as db:
        row = AgentSession(id=session_id, agent_id=rollout.agent_id, rollout_id=rollout.id, arm=arm,
                           version="v2" if arm == "candidate" else "v1", environment=environment,
                           session_key=session_id, cap_tool_calls=100, cap_spend_micros=10_000_000,
                           started_at=started_at, ended_at=started_at + 1 if ended else None,
                           status=fields.pop("status", "ok" if ended else "open"), **fields)
        db.add(row)
        for index, (tool, verdict, outcome, latency_ms, *extra) in enumerate(calls):
            db.add(Decision(id=f"{session_id}-d{index}", session_id=session_id, agent_id=rollout.agent_id,
                            rollout_id=rollout.id, version=row.version, arm=arm, tool=tool,
                            tool_class=TOOLS.get(tool, "irreversible"), cost_micros=10_000, verdict=verdict,
                            at=started_at + index * 0.01, outcome_status=outcome,
                            outcome_at=None if outcome is None else started_at + index * 0.01 + 0.005,
                            latency_ms=latency_ms, **(extra[0] if extra else {})))
    return session_id
