"""Arguments through the real app: stored redacted with the digest, bound to their approval, bounded at 16 KiB."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest
from flask import Flask

from gatekeeper.core.arguments import MAX_ARGUMENTS_BYTES
from tests.support.runtime import Runtime, counts

TOOL = "refund_card"  # not named by the policy, so irreversible; no sequence rule limits it
REFUND = {"to": "ana@example.com", "amount": 20, "card_number": "4111 1111 1111 1111",
          "login": {"user": "ana", "password": "hunter2"}}
REDACTED = {"to": "ana@example.com", "amount": 20, "card_number": "[redacted]",
            "login": {"user": "ana", "password": "[redacted]"}}


def sha256(arguments: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(arguments, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def ask(runtime: Runtime, **body: Any) -> tuple[str, dict[str, Any]]:
    runtime.setup("canary", 0)
    session = runtime.session(candidate=True)["session_id"]
    return session, runtime.decide(session, TOOL, 0.05, **body)


def approve(runtime: Runtime, approval_id: str) -> None:
    runtime.ok(runtime.client.post(f"/v1/approvals/{approval_id}/approve", json={}, headers=runtime.rm))


def test_arguments_are_stored_redacted_with_the_digest_of_the_whole(runtime: Runtime, app: Flask,
                                                                    viewer: dict[str, str]) -> None:
    session, found = ask(runtime, arguments=REFUND)
    assert (found["verdict"], found["reason"]) == ("approval_required", "approval_required")
    assert found["message"] == (f"A person must approve this call first; send it again with approval "
                                f"{found['approval_id']} once it is approved.")
    stored = counts(app, "SELECT arguments, arguments_digest FROM decisions WHERE id = :id", id=found["decision_id"])
    assert (json.loads(stored[0]), stored[1]) == (REDACTED, sha256(REFUND))
    assert "4111" not in stored[0] and "hunter2" not in stored[0]
    approval = counts(app, "SELECT stage, arguments, arguments_digest FROM approvals WHERE id = :id",
                      id=found["approval_id"])
    assert (approval[0], json.loads(approval[1]), approval[2]) == ("canary", REDACTED, sha256(REFUND))
    queue = runtime.ok(runtime.client.get("/v1/approvals", headers=viewer))
    assert [(a["approval_id"], a["stage"], a["arguments"]) for a in queue] == [
        (found["approval_id"], "canary", REDACTED)]
    one = runtime.ok(runtime.client.get(f"/v1/approvals/{found['approval_id']}", headers=runtime.agent))
    assert (one["stage"], one["arguments"], one["state"]) == ("canary", REDACTED, "pending")
    plain = runtime.decide(session, "search_kb", arguments={"query": "refund policy"})
    assert counts(app, "SELECT arguments FROM decisions WHERE id = :id", id=plain["decision_id"])[0] == (
        '{"query":"refund policy"}')


def test_an_approval_is_valid_once_for_exactly_its_arguments(runtime: Runtime, app: Flask) -> None:
    session, found = ask(runtime, arguments=REFUND)
    first = found["approval_id"]
    approve(runtime, first)
    changed = runtime.decide(session, TOOL, 0.05, approval_id=first, arguments={**REFUND, "amount": 2000})
    assert (changed["verdict"], changed["reason"]) == ("approval_required", "approval_arguments_changed")
    assert changed["approval_id"] != first
    assert changed["message"] == ("The arguments differ from the ones that were approved, so a person must "
                                  f"approve this call again as approval {changed['approval_id']}.")
    missing = runtime.decide(session, TOOL, 0.05, approval_id=first)
    assert (missing["verdict"], missing["reason"]) == ("approval_required", "approval_arguments_changed")
    assert counts(app, "SELECT state, consumed_at FROM approvals WHERE id = :id", id=first) == ("approved", None)
    reordered = dict(reversed(list(REFUND.items())))  # the same arguments in another key order: the same call
    allowed = runtime.decide(session, TOOL, 0.05, approval_id=first, arguments=reordered)
    assert (allowed["verdict"], allowed["reason"], allowed["message"]) == ("allow", "", "The call may run.")
    again = runtime.decide(session, TOOL, 0.05, approval_id=first, arguments=REFUND)
    assert (again["verdict"], again["reason"]) == ("deny", "approval_used")
    assert counts(app, "SELECT tool_calls FROM sessions WHERE id = :id", id=session)[0] == 1
    pending = counts(app, "SELECT count(*) FROM approvals WHERE state = 'pending'")[0]
    assert pending == 2  # the changed and the missing arguments each asked a person anew


def test_an_approval_asked_without_arguments_does_not_cover_a_call_with_some(runtime: Runtime) -> None:
    session, found = ask(runtime)
    approve(runtime, found["approval_id"])
    sent = runtime.decide(session, TOOL, 0.05, approval_id=found["approval_id"], arguments={"to": "x"})
    assert sent["reason"] == "approval_arguments_changed"
    assert runtime.decide(session, TOOL, 0.05, approval_id=found["approval_id"])["verdict"] == "allow"


@pytest.mark.parametrize(("arguments", "problem"), [
    ({"x": "a" * (MAX_ARGUMENTS_BYTES - len('{"x":""}') + 1)}, "at most 16384 bytes"),
    (["not", "an", "object"], "should be an object"),
    ("text", "should be an object"),
    (7, "should be an object"),
])
def test_arguments_are_a_json_object_of_at_most_16_kib(runtime: Runtime, app: Flask, arguments: Any,
                                                       problem: str) -> None:
    runtime.setup("canary", 0)
    session = runtime.session(candidate=True)["session_id"]
    answer = runtime.client.post("/v1/decisions", json={"session_id": session, "tool": "search_kb", "cost": 0.01,
                                                        "arguments": arguments}, headers=runtime.agent)
    assert answer.status_code == 400, answer.get_json()
    assert answer.get_json()["error"]["field"] == "arguments" and problem in answer.get_json()["error"]["message"]
    assert counts(app, "SELECT count(*) FROM decisions")[0] == 0
    biggest = {"x": "a" * (MAX_ARGUMENTS_BYTES - len('{"x":""}'))}
    assert runtime.decide(session, "search_kb", arguments=biggest)["verdict"] == "allow"


@pytest.mark.parametrize("raw", [b'{"x": NaN}', b'{"x": Infinity}', b'{"x": -Infinity}'])
def test_arguments_without_a_json_form_are_refused(runtime: Runtime, raw: bytes) -> None:
    runtime.setup("canary", 0)
    session = runtime.session(candidate=True)["session_id"]
    body = b'{"session_id": "%s", "tool": "search_kb", "cost": 0.01, "arguments": %s}' % (session.encode(), raw)
    answer = runtime.client.post("/v1/decisions", data=body, content_type="application/json",
                                 headers=runtime.agent)
    assert answer.status_code == 400 and answer.get_json()["error"]["field"] == "arguments"


def test_every_answer_carries_a_message_and_the_openapi_document_says_so(runtime: Runtime) -> None:
    runtime.setup("canary", 0)
    session = runtime.session(candidate=True)["session_id"]
    answers = [runtime.decide(session, tool) for tool in ("search_kb", "refund_payment", "send_email")]
    assert [a["message"] for a in answers] == [
        "The call may run.", "refund_payment is not allowed until lookup_customer has run in this session.",
        f"A person must approve this call first; send it again with approval {answers[2]['approval_id']} once it "
        "is approved."]
    schemas = runtime.client.get("/openapi.json").get_json()["components"]["schemas"]
    assert "message" in schemas["DecisionView"]["required"]
    assert {"arguments", "request_id"} <= set(schemas["DecisionCreate"]["properties"])
    assert {"stage", "arguments"} <= set(schemas["ApprovalView"]["properties"])
    assert "cancelled" in json.dumps(schemas["ApprovalView"]["properties"]["state"])
