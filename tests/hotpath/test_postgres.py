"""Scale-out: two `gatekeeper serve` replicas on one real Postgres keep caps exact under 64 clients."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from flask import Flask
from sqlalchemy import text

from gatekeeper.store.db import Database
from tests.support.runtime import (
    Runtime,
    assert_exact,
    assert_one_reservation_for_64_retries,
    counts,
    hammer,
    open_sessions,
)
from tests.support.servers import Server
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
                                                        policy_dir: Path, served: Callable[..., Server]) -> None:
    plan = open_sessions(runtime)
    replicas = [served(database_url=db_url, policy_dir=policy_dir, workers=2, name=f"replica{n}", upgrade=False)
                for n in range(2)]
    verdicts = hammer([r.url for r in replicas], runtime.agent["Authorization"].removeprefix("Bearer "), plan)
    assert_exact(app, plan, verdicts)


def test_64_concurrent_retries_reserve_once_across_two_replicas_on_postgres(
        runtime: Runtime, app: Flask, db_url: str, policy_dir: Path, served: Callable[..., Server]) -> None:
    runtime.setup("canary", 0)
    replicas = [served(database_url=db_url, policy_dir=policy_dir, workers=2, name=f"replica{n}", upgrade=False)
                for n in range(2)]
    assert_one_reservation_for_64_retries(runtime, app, [r.url for r in replicas])


def test_a_retry_that_loses_the_race_gets_the_winners_answer_and_its_reservation_is_undone(
        runtime: Runtime, app: Flask, db_url: str) -> None:
    """The unique index is the arbiter: a retry that missed the first answer waits on it, then returns it."""
    runtime.setup("canary", 0)
    session = runtime.session(candidate=True)["session_id"]
    database = Database(db_url)
    answers: list[dict[str, object]] = []
    try:
        with database.engine.connect() as winner:
            winner.execute(text(
                "INSERT INTO decisions (id, session_id, agent_id, rollout_id, version, arm, stage, tool, tool_class,"
                " cost_micros, verdict, reason, request_id, remaining_tool_calls, remaining_spend_micros, at)"
                " SELECT 'winner', id, agent_id, rollout_id, version, arm, 'canary', 'search_kb', 'read_only', 10000,"
                " 'allow', '', 'race', 19, 490000, 0 FROM sessions WHERE id = :id"), {"id": session})
            retry = threading.Thread(target=lambda: answers.append(runtime.client.post(
                "/v1/decisions", json={"session_id": session, "tool": "search_kb", "cost": 0.01,
                                       "request_id": "race"}, headers=runtime.agent).get_json()))
            retry.start()
            _wait_for_a_lock_wait(database)  # the retry reserved, then waits on the winner's index entry
            winner.commit()
            retry.join(timeout=30)
    finally:
        database.dispose()
    assert answers == [{"decision_id": "winner", "verdict": "allow", "reason": "", "message": "The call may run.",
                        "remaining": {"tool_calls": 19, "spend": 0.49}}]
    assert counts(app, "SELECT tool_calls, spend_micros FROM sessions WHERE id = :id", id=session) == (0, 0)
    assert counts(app, "SELECT count(*) FROM decisions WHERE session_id = :id", id=session)[0] == 1


def _wait_for_a_lock_wait(database: Database) -> None:
    deadline = time.monotonic() + 20
    with database.engine.connect() as watcher:
        while time.monotonic() < deadline:
            waiting = watcher.execute(text("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                                           " AND wait_event_type = 'Lock'")).scalar()
            watcher.rollback()
            if waiting:
                return
            time.sleep(0.02)
    raise AssertionError("the retry never waited on the winner's row")


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


def test_arguments_and_approval_cleanup_on_postgres(runtime: Runtime, app: Flask) -> None:
    runtime.setup("canary", 1)
    session = runtime.session(candidate=True, percent=5.0)["session_id"]
    refused = runtime.client.post("/v1/decisions", headers=runtime.agent, json={
        "session_id": session, "tool": "close_account", "cost": 0.05, "arguments": {"note\x00key": "a\x00b"}})
    assert refused.status_code == 400 and refused.get_json()["error"]["field"] == "arguments"  # a NUL never gets in
    odd = {"note\\key": "a\tb\u2028", "password": "p", "city": "東京"}  # escapes and non-ASCII reach the text column
    found = runtime.decide(session, "close_account", 0.05, arguments=odd)
    approval = runtime.ok(runtime.client.get(f"/v1/approvals/{found['approval_id']}", headers=runtime.agent))
    assert approval["arguments"] == {**odd, "password": "[redacted]"} and approval["stage"] == "canary"
    runtime.act("promote")  # canary 5% -> expansion 10%: the rollout leaves canary
    approval = runtime.ok(runtime.client.get(f"/v1/approvals/{found['approval_id']}", headers=runtime.agent))
    assert (approval["state"], approval["decision_reason"]) == ("cancelled", "the rollout left canary")
    assert counts(app, "SELECT count(*) FROM approvals WHERE state = 'pending'")[0] == 0
