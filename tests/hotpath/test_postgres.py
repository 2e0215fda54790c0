"""Scale-out: two `gatekeeper serve` replicas on one real Postgres keep caps exact under 64 clients."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from flask import Flask

from gatekeeper.store.db import Database
from tests.hotpath.conftest import Runtime, Served, counts
from tests.hotpath.test_gunicorn import assert_exact, hammer, open_sessions
from tests.support.services import PostgresServer


@pytest.fixture
def db_url(postgres: PostgresServer) -> str:
    """A fresh Postgres database instead of the SQLite file of tests/conftest.py, with the schema in place."""
    url = postgres.create_database("hotpath")
    database = Database(url)
    database.upgrade()
    database.dispose()
    return url


def test_caps_are_exact_across_two_replicas_on_postgres(runtime: Runtime, app: Flask, db_url: str,
                                                        policy_dir: Path, served: Callable[..., Served]) -> None:
    plan = open_sessions(runtime)
    replicas = [served(database_url=db_url, policy_dir=policy_dir, workers=2, name=f"replica{n}", upgrade=False)
                for n in range(2)]
    verdicts = hammer([r.url for r in replicas], runtime.agent["Authorization"].removeprefix("Bearer "), plan)
    assert_exact(app, plan, verdicts)


def test_the_kill_switch_and_approvals_work_on_postgres(runtime: Runtime) -> None:
    runtime.setup("canary", 0)
    session = runtime.session(candidate=True)["session_id"]
    found = runtime.decide(session, "send_email")
    runtime.ok(runtime.client.post(f"/v1/approvals/{found['approval_id']}/approve", json={}, headers=runtime.rm))
    assert runtime.decide(session, "send_email", approval_id=found["approval_id"])["verdict"] == "allow"
    assert runtime.decide(session, "send_email", approval_id=found["approval_id"])["reason"] == "sequence_max_calls"
    decisions = [runtime.decide(session, "search_kb")["decision_id"] for _ in range(10)]
    tripped = [runtime.report(d, "error" if n < 3 else "ok")["kill_switch_tripped"] for n, d in enumerate(decisions)]
    assert tripped == [False] * 9 + [True]  # 3 errors in 10 calls: 30% > 25%, at the 10th (min_calls)
    assert runtime.decide(session, "search_kb")["reason"] == "kill_switch"


def test_a_lost_connection_is_a_503_and_the_next_decision_reconnects(runtime: Runtime, app: Flask,
                                                                      db_url: str) -> None:
    runtime.setup("canary", 0)
    session = runtime.session(candidate=True)["session_id"]
    runtime.decide(session, "search_kb")  # opens the hot path's connection
    database = Database(db_url)
    with database.engine.begin() as connection:  # what a Postgres restart or failover does to it
        killed = connection.exec_driver_sql(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()").scalar()
    database.dispose()
    assert killed >= 1
    lost = runtime.client.post("/v1/decisions", json={"session_id": session, "tool": "search_kb", "cost": 0.01},
                               headers=runtime.agent)
    assert lost.status_code == 503 and "database unavailable" in lost.get_json()["error"]["message"]
    assert runtime.decide(session, "search_kb")["verdict"] == "allow"
    assert counts(app, "SELECT tool_calls FROM sessions WHERE id = :id", id=session)[0] == 2  # nothing half-done
