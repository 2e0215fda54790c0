"""`GET /v1/sessions/{session_id}`: the session trace through the real app and test client (SPEC §5)."""

from __future__ import annotations

import time
from collections.abc import Callable

from flask import Flask
from flask.testing import FlaskClient

from tests.support import seed
from tests.support.app import svc

MASKED = "[redacted]"


def _support_bot(app: Flask, *, at: float) -> None:
    seed.start(svc(app), "support-bot", policy="support-default", stable="v6", candidate="v7", at=at)


def test_a_trace_lists_every_decision_in_order_with_arguments_outcome_and_overrun(
        app: Flask, client: FlaskClient, make_token: Callable[..., dict[str, str]]) -> None:
    now = time.time()
    _support_bot(app, at=now - 600)
    services = svc(app)
    session_id = seed.live_session(services, "support-bot", at=now - 300)
    seed.record_call(services, session_id, tool="lookup_customer", tool_class="read_only", verdict="allow",
                     at=now - 290, arguments={"customer": "C-1042"}, outcome=("ok", 0.01, 120.0))
    seed.record_call(services, session_id, tool="refund_payment", tool_class="irreversible", verdict="allow",
                     at=now - 280, cost=0.02, arguments={"amount": 120, "card_number": MASKED},
                     outcome=("ok", 0.05, 900.0))
    seed.record_call(services, session_id, tool="send_email", tool_class="irreversible", verdict="deny",
                     at=now - 270, reason="max_calls")
    approval = seed.approval_for(services, session_id, tool="send_email", tool_class="irreversible", cost=0.01,
                                 at=now - 260, arguments={"to": "c-1042@example.com"}, state="cancelled")

    for role in ("viewer", "release_manager"):
        response = client.get(f"/v1/sessions/{session_id}", headers=make_token(role))
        assert response.status_code == 200, response.get_json()
        trace = response.get_json()
        assert trace["session"]["agent"] == "support-bot" and trace["session"]["version"] == "v7"
        assert [d["tool"] for d in trace["decisions"]] == ["lookup_customer", "refund_payment", "send_email",
                                                           "send_email"]
        asked = trace["decisions"][3]
        assert (asked["verdict"], asked["approval_id"], asked["approval_state"]) == (
            "approval_required", approval, "cancelled")
        refund = trace["decisions"][1]
        assert refund["tool_class"] == "irreversible" and refund["verdict"] == "allow"
        assert refund["arguments"] == {"amount": 120, "card_number": MASKED}
        assert refund["outcome"]["actual_cost"] == 0.05 and refund["outcome"]["latency_ms"] == 900.0
        assert abs(refund["outcome"]["overrun"] - 0.03) < 1e-9 and refund["cost"] == 0.02
        assert trace["decisions"][0]["outcome"]["overrun"] is None
        assert trace["decisions"][2]["outcome"] is None and trace["decisions"][2]["reason"] == "max_calls"
        assert trace["mirror"] is None


def test_an_agent_token_reads_its_own_agents_sessions_only(
        app: Flask, client: FlaskClient, make_token: Callable[..., dict[str, str]]) -> None:
    now = time.time()
    _support_bot(app, at=now - 600)
    seed.start(svc(app), "billing-agent", policy="billing", stable="v3", candidate="v4", at=now - 600)
    session_id = seed.live_session(svc(app), "support-bot", at=now - 300)
    own = client.get(f"/v1/sessions/{session_id}", headers=make_token("agent", agent="support-bot"))
    other = client.get(f"/v1/sessions/{session_id}", headers=make_token("agent", agent="billing-agent"))
    alerts = client.get(f"/v1/sessions/{session_id}", headers=make_token("alertmanager"))
    anonymous = client.get(f"/v1/sessions/{session_id}")
    assert (own.status_code, other.status_code, alerts.status_code, anonymous.status_code) == (200, 403, 403, 401)
    nul = client.get("/v1/sessions/a%00b", headers=make_token("viewer"))
    assert nul.status_code == 400 and nul.get_json()["error"]["code"]  # the edge refuses NUL in any path
    for odd in ("nope", "x" * 5000, "%F0%9F%92%A5", "a'%20OR%20'1'='1"):
        missing = client.get(f"/v1/sessions/{odd}", headers=make_token("viewer"))
        assert missing.status_code == 404, odd
        assert missing.get_json()["error"]["field"] == "session_id"


def test_a_mirrored_pair_shows_the_stable_and_candidate_traces_side_by_side(
        app: Flask, client: FlaskClient, make_token: Callable[..., dict[str, str]]) -> None:
    now = time.time()
    _support_bot(app, at=now - 600)
    services = svc(app)
    stable = seed.live_session(services, "support-bot", at=now - 300, arm="stable", stage="shadow")
    mirror = seed.live_session(services, "support-bot", at=now - 300, arm="candidate", stage="shadow",
                               mirror_of=stable)
    seed.record_call(services, stable, tool="send_email", tool_class="irreversible", verdict="allow", at=now - 200)
    seed.record_call(services, mirror, tool="send_email", tool_class="irreversible", verdict="shadow", at=now - 199)
    headers = make_token("viewer")
    for asked in (stable, mirror):
        trace = client.get(f"/v1/sessions/{asked}", headers=headers).get_json()
        assert trace["session"]["session_id"] == asked
        pair = trace["mirror"]
        assert (pair["stable"]["session"]["session_id"], pair["candidate"]["session"]["session_id"]) == (stable, mirror)
        assert [d["verdict"] for d in pair["stable"]["decisions"]] == ["allow"]
        assert [d["verdict"] for d in pair["candidate"]["decisions"]] == ["shadow"]
        assert pair["candidate"]["session"]["mirror_of"] == stable


def test_the_trace_is_typed_in_the_openapi_document(client: FlaskClient) -> None:
    document = client.get("/openapi.json").get_json()
    operation = document["paths"]["/v1/sessions/{session_id}"]["get"]
    assert operation["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith("/SessionTrace")
    schemas = document["components"]["schemas"]
    assert {"SessionTrace", "TraceDecision", "TraceOutcome", "MirroredTraces"} <= set(schemas)
    decision = schemas["TraceDecision"]["properties"]
    assert {"tool", "tool_class", "verdict", "reason", "cost", "arguments", "outcome"} <= set(decision)
    assert "agent" in operation["description"] and "viewer" in operation["description"]
