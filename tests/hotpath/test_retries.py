"""Safe retries: the same request_id in the same session gets the first answer and reserves nothing again."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from flask import Flask

from tests.support.runtime import Runtime, assert_one_reservation_for_64_retries, counts
from tests.support.scrape import parse, total
from tests.support.servers import Server

ANSWER = ("decision_id", "verdict", "reason", "message", "remaining", "approval_id")


def same(one: dict[str, Any], other: dict[str, Any]) -> bool:
    return all(one.get(key) == other.get(key) for key in ANSWER)


def decisions_counted(runtime: Runtime) -> float:
    samples = parse(runtime.client.get("/metrics").get_data(as_text=True))
    return total(samples, "gatekeeper_decisions_total", agent="bot")


def test_a_retry_gets_the_first_answer_and_reserves_nothing(runtime: Runtime, app: Flask) -> None:
    runtime.setup("canary", 0)
    session = runtime.session(candidate=True)["session_id"]
    first = runtime.decide(session, "search_kb", 0.10, request_id="call-1", arguments={"query": "refunds"})
    runtime.decide(session, "search_kb", 0.05)  # another call in between changes the budget left
    retried = runtime.decide(session, "search_kb", 0.10, request_id="call-1", arguments={"query": "refunds"})
    assert same(retried, first) and retried["remaining"] == {"tool_calls": 19, "spend": 0.4}
    assert counts(app, "SELECT tool_calls, spend_micros FROM sessions WHERE id = :id", id=session) == (2, 150_000)
    assert counts(app, "SELECT count(*) FROM decisions WHERE session_id = :id", id=session)[0] == 2
    assert decisions_counted(runtime) == 2  # the retry's answer was counted when it was first given
    other = runtime.decide(session, "search_kb", 0.10, request_id="call-2", arguments={"query": "refunds"})
    assert other["decision_id"] != first["decision_id"] and other["remaining"]["tool_calls"] == 17


def test_a_request_id_belongs_to_one_session(runtime: Runtime) -> None:
    runtime.setup("canary", 0)
    one, two = (runtime.session(candidate=True)["session_id"] for _ in range(2))
    first = runtime.decide(one, "search_kb", request_id="same")
    assert runtime.decide(two, "search_kb", request_id="same")["decision_id"] != first["decision_id"]


def test_a_request_id_reused_for_another_call_is_refused(runtime: Runtime, app: Flask) -> None:
    runtime.setup("canary", 0)
    session = runtime.session(candidate=True)["session_id"]
    runtime.decide(session, "search_kb", 0.10, request_id="r", arguments={"query": "a"})
    for other in ({"tool": "update_ticket", "cost": 0.10, "arguments": {"query": "a"}},
                  {"tool": "search_kb", "cost": 0.20, "arguments": {"query": "a"}},
                  {"tool": "search_kb", "cost": 0.10, "arguments": {"query": "b"}},
                  {"tool": "search_kb", "cost": 0.10}):
        answer = runtime.client.post("/v1/decisions", json={"session_id": session, "request_id": "r", **other},
                                     headers=runtime.agent)
        assert answer.status_code == 409 and answer.get_json()["error"]["field"] == "request_id", other
    assert counts(app, "SELECT tool_calls FROM sessions WHERE id = :id", id=session)[0] == 1


def test_a_retry_of_an_approval_or_a_denial_repeats_it(runtime: Runtime, app: Flask) -> None:
    runtime.setup("canary", 0)
    session = runtime.session(candidate=True)["session_id"]
    waiting = runtime.decide(session, "send_email", request_id="mail")
    assert same(runtime.decide(session, "send_email", request_id="mail"), waiting)
    assert counts(app, "SELECT count(*) FROM approvals")[0] == 1
    denied = runtime.decide(session, "refund_payment", request_id="refund")
    assert denied["reason"] == "sequence_before"
    runtime.decide(session, "lookup_customer")  # the retry still gets the first answer, not a new verdict
    assert same(runtime.decide(session, "refund_payment", request_id="refund"), denied)


def test_a_retry_after_the_session_ended_still_gets_its_answer(runtime: Runtime) -> None:
    runtime.setup("canary", 0)
    session = runtime.session(candidate=True)["session_id"]
    first = runtime.decide(session, "search_kb", request_id="late")
    runtime.ok(runtime.client.post(f"/v1/sessions/{session}/end", json={"status": "ok"}, headers=runtime.agent))
    assert same(runtime.decide(session, "search_kb", request_id="late"), first)
    new = runtime.client.post("/v1/decisions", json={"session_id": session, "tool": "search_kb", "cost": 0.01,
                                                     "request_id": "new"}, headers=runtime.agent)
    assert new.status_code == 409


def test_request_ids_are_bounded(runtime: Runtime) -> None:
    runtime.setup("canary", 0)
    session = runtime.session(candidate=True)["session_id"]
    assert runtime.decide(session, "search_kb", request_id="r" * 100)["verdict"] == "allow"
    for bad in ("r" * 101, "", "tab\there", "nul\x00", "é"):
        answer = runtime.client.post("/v1/decisions", json={"session_id": session, "tool": "search_kb",
                                                            "cost": 0.01, "request_id": bad}, headers=runtime.agent)
        assert answer.status_code == 400 and answer.get_json()["error"]["field"] == "request_id", bad


def test_64_concurrent_retries_reserve_once_on_gunicorn_and_sqlite(runtime: Runtime, app: Flask, db_url: str,
                                                                   policy_dir: Path,
                                                                   served: Callable[..., Server]) -> None:
    runtime.setup("canary", 0)
    server = served(database_url=db_url, policy_dir=policy_dir, workers=2)
    assert_one_reservation_for_64_retries(runtime, app, [server.url])
