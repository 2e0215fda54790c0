"""The dashboard's pages through the real Flask test client on a real SQLite file: sign-in, CSRF,
roles, actions, approvals, policies, and pages that must degrade instead of failing."""

from __future__ import annotations

import json
import re
import time
import uuid
from pathlib import Path

from flask import Flask
from flask.testing import FlaskClient
from sqlmodel import select

from gatekeeper import rollouts
from gatekeeper.store import rollout_records
from gatekeeper.store.models import Agent, Approval, GateEvaluation, User
from tests.support import seed
from tests.support.app import svc
from tests.support.dashboard import csrf_of, signed_in

PAGES = ("/", "/partials/overview", "/agents/support-bot", "/partials/agents/support-bot", "/approvals",
         "/partials/approvals", "/policies")


def _support_bot(app: Flask, *, at: float | None = None) -> None:
    seed.start(svc(app), "support-bot", policy="support-default", stable="v6", candidate="v7",
               at=at or time.time() - 60)


def _state(app: Flask, agent: str = "support-bot") -> tuple[str, int, str]:
    with svc(app).db.reading() as db:
        rollout = rollout_records.current_rollout(rollout_records.get_agent(agent, db=db), db=db)
        assert rollout is not None
        return rollout.stage, rollout.tier, rollout.state


# -- sign-in -----------------------------------------------------------------------------------


def test_every_page_sends_the_anonymous_to_sign_in(client: FlaskClient, users: dict[str, str]) -> None:
    for path in PAGES:
        response = client.get(path)
        assert response.status_code == 302, path
        assert response.location.startswith("/login?next=")


def test_a_wrong_password_or_unknown_user_is_refused(client: FlaskClient, users: dict[str, str]) -> None:
    token = csrf_of(client.get("/login").get_data(as_text=True))
    for username, password in (("alice", "not-her-password"), ("mallory", "whatever-1234"), ("alice", "")):
        response = client.post("/login", data={"username": username, "password": password, "csrf_token": token})
        assert response.status_code == 401
        assert "Wrong username or password" in response.get_data(as_text=True)
    assert client.get("/").status_code == 302


def test_sign_in_sets_a_hardened_cookie_and_returns_to_the_page_asked_for(
        client: FlaskClient, users: dict[str, str]) -> None:
    token = csrf_of(client.get("/login").get_data(as_text=True))
    response = client.post("/login", data={"username": "alice", "password": users["alice"], "csrf_token": token,
                                           "next": "/policies"})
    assert (response.status_code, response.location) == (303, "/policies")
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
    assert csrf_of(client.get("/").get_data(as_text=True)) != token  # a fresh token per sign-in


def test_sign_in_never_redirects_off_site(app: Flask, users: dict[str, str]) -> None:
    for wanted in ("//evil.example/", "https://evil.example/", "/\\evil.example"):
        client = app.test_client()
        token = csrf_of(client.get("/login").get_data(as_text=True))
        response = client.post("/login", data={"username": "alice", "password": users["alice"],
                                               "csrf_token": token, "next": wanted})
        assert (response.status_code, response.location) == (303, "/"), wanted


def test_sign_in_itself_needs_the_csrf_token(client: FlaskClient, users: dict[str, str]) -> None:
    client.get("/login")
    response = client.post("/login", data={"username": "alice", "password": users["alice"]})
    assert response.status_code == 400
    assert client.get("/").status_code == 302


def test_sign_out_is_a_post_with_the_csrf_token(client: FlaskClient, users: dict[str, str]) -> None:
    token = signed_in(client, "alice")
    assert client.get("/logout").status_code == 200  # a confirmation page; still signed in
    assert client.post("/logout").status_code == 400
    assert client.get("/").status_code == 200
    assert client.post("/logout", data={"csrf_token": token}).status_code == 303
    assert client.get("/").status_code == 302


def test_a_deleted_user_is_signed_out_at_once(app: Flask, client: FlaskClient, users: dict[str, str]) -> None:
    signed_in(client, "alice")
    with svc(app).db.transaction() as db:
        db.delete(db.exec(select(User).where(User.username == "alice")).one())
    assert client.get("/").status_code == 302


# -- actions, roles and CSRF ------------------------------------------------------------------


def test_release_manager_promotes_and_the_audit_trail_names_them(
        app: Flask, client: FlaskClient, users: dict[str, str]) -> None:
    _support_bot(app)
    token = signed_in(client, "alice")
    response = client.post("/agents/support-bot/actions/promote", data={"csrf_token": token, "reason": "clean"})
    assert (response.status_code, response.location) == (303, "/agents/support-bot")
    assert _state(app) == ("shadow", 0, "progressing")
    page = client.get("/agents/support-bot").get_data(as_text=True)
    assert "Promote: support-bot is now at shadow (progressing)." in page
    assert "by user:alice" in page and "clean" in page


def test_rollback_goes_to_the_chosen_stage(app: Flask, client: FlaskClient, users: dict[str, str]) -> None:
    _support_bot(app)
    token = signed_in(client, "alice")
    for _ in range(3):
        client.post("/agents/support-bot/actions/promote", data={"csrf_token": token, "reason": "up"})
    assert _state(app) == ("canary", 1, "progressing")
    page = client.get("/agents/support-bot").get_data(as_text=True)
    assert 'value="twin">start of twin → twin, paused' in page
    response = client.post("/agents/support-bot/actions/rollback",
                           data={"csrf_token": token, "reason": "errors", "to_stage": "twin"})
    assert response.status_code == 303
    assert _state(app) == ("twin", 0, "paused")


def test_bad_action_requests_get_a_clear_4xx_and_change_nothing(
        app: Flask, client: FlaskClient, users: dict[str, str]) -> None:
    _support_bot(app)
    token = signed_in(client, "alice")
    cases = [("/agents/support-bot/actions/promote", {"reason": "  "}, 400, "say why"),
             ("/agents/support-bot/actions/promote", {"reason": "x" * 1001}, 400, "longer than"),
             ("/agents/support-bot/actions/launch", {"reason": "x"}, 404, "no action"),
             ("/agents/support-bot/actions/resume", {"reason": "x"}, 409, "cannot resume"),
             ("/agents/support-bot/actions/rollback", {"reason": "x"}, 409, "first tier"),
             ("/agents/support-bot/actions/rollback", {"reason": "x", "to_stage": "moon"}, 400, "unknown stage"),
             ("/agents/nobody/actions/promote", {"reason": "x"}, 404, "no agent")]
    for path, form, status, words in cases:
        response = client.post(path, data={**form, "csrf_token": token})
        assert response.status_code == status, (path, form)
        assert words in response.get_data(as_text=True), (path, form)
        assert response.mimetype == "text/html"
    assert _state(app) == ("twin", 0, "progressing")


def test_viewer_sees_disabled_buttons_and_every_post_is_refused(
        app: Flask, client: FlaskClient, users: dict[str, str]) -> None:
    _support_bot(app)
    approval_id = seed.open_approval(svc(app), "support-bot", tool="send_email", tool_class="irreversible",
                                     cost=0.01, preview="hello", at=time.time())
    token = signed_in(client, "victor")
    page = client.get("/agents/support-bot").get_data(as_text=True)
    assert len(re.findall(r"data-action=\"\w+\"[^>]*disabled", page)) == 7
    assert "<dialog" not in page
    queue = client.get("/approvals").get_data(as_text=True)
    assert re.search(r'data-verdict="approve"[^>]*disabled', queue)
    for path in ("/agents/support-bot/actions/promote", f"/approvals/{approval_id}/approve"):
        response = client.post(path, data={"csrf_token": token, "reason": "sneaky"})
        assert response.status_code == 403, path
    assert _state(app) == ("twin", 0, "progressing")


def test_posts_without_a_valid_csrf_token_are_refused(app: Flask, client: FlaskClient, users: dict[str, str]) -> None:
    _support_bot(app)
    signed_in(client, "alice")
    for extra in ({}, {"csrf_token": ""}, {"csrf_token": "guess"}):
        response = client.post("/agents/support-bot/actions/kill", data={"reason": "x", **extra})
        assert response.status_code == 400
    assert _state(app) == ("twin", 0, "progressing")


def test_pages_carry_security_headers_and_nothing_from_other_sites(
        app: Flask, client: FlaskClient, users: dict[str, str]) -> None:
    _support_bot(app)
    signed_in(client, "alice")
    for path in PAGES:
        response = client.get(path)
        assert response.status_code == 200, path
        assert "default-src 'self'" in response.headers["Content-Security-Policy"]
        assert response.headers["X-Frame-Options"] == "DENY"
        assert not re.search(r'(src|href)="(https?:)?//', response.get_data(as_text=True)), path


# -- approvals --------------------------------------------------------------------------------


def test_approve_and_reject_with_a_reason(app: Flask, client: FlaskClient, users: dict[str, str]) -> None:
    _support_bot(app)
    now = time.time()
    first = seed.open_approval(svc(app), "support-bot", tool="refund_payment", tool_class="irreversible",
                               cost=0.35, preview="Refund $120", at=now)
    second = seed.open_approval(svc(app), "support-bot", tool="send_email", tool_class="irreversible",
                                cost=0.01, preview="Email", at=now)
    token = signed_in(client, "alice")
    queue = client.get("/approvals").get_data(as_text=True)
    assert first in queue and second in queue and "Refund $120" in queue and "$0.35" in queue
    assert client.post(f"/approvals/{first}/approve", data={"csrf_token": token}).status_code == 400
    assert client.post(f"/approvals/{first}/approve", data={"csrf_token": token, "reason": "ok"}).status_code == 303
    assert client.post(f"/approvals/{second}/reject", data={"csrf_token": token, "reason": "no"}).status_code == 303
    again = client.post(f"/approvals/{first}/reject", data={"csrf_token": token, "reason": "changed my mind"})
    assert again.status_code == 409
    with svc(app).db.reading() as db:
        rows = {a.id: a for a in db.exec(select(Approval))}
        assert (rows[first].state, rows[first].decided_by) == ("approved", "user:alice")
        assert (rows[second].state, rows[second].decision_reason) == ("rejected", "no")
    assert "No tool call is waiting" in client.get("/partials/approvals").get_data(as_text=True)


def test_expired_approvals_leave_the_queue(app: Flask, client: FlaskClient, users: dict[str, str]) -> None:
    _support_bot(app)
    gone = seed.open_approval(svc(app), "support-bot", tool="send_email", tool_class="irreversible", cost=0.01,
                              preview="late", at=time.time() - 3600)
    signed_in(client, "alice")
    page = client.get("/approvals").get_data(as_text=True)
    assert "No tool call is waiting" in page
    assert "expired" in page and gone not in page.split("Recently decided")[0]


# -- degrading instead of failing -------------------------------------------------------------


def test_agent_without_rollout_or_evaluation_renders(app: Flask, client: FlaskClient, users: dict[str, str]) -> None:
    rollouts.register_agent(svc(app), "billing-agent", policy="billing", stable_version="v3", now=time.time())
    _support_bot(app)
    signed_in(client, "victor")
    assert "No rollout yet" in client.get("/agents/billing-agent").get_data(as_text=True)
    page = client.get("/agents/support-bot").get_data(as_text=True)
    assert "No gate evaluation yet" in page and "No gate evaluation has measured this yet" in page
    assert "no gate evaluation yet" in client.get("/").get_data(as_text=True)


def test_metrics_outage_is_shown_on_every_page_not_a_server_error(
        app: Flask, client: FlaskClient, users: dict[str, str]) -> None:
    now = time.time()
    _support_bot(app, at=now - 3600)
    for _ in range(2):
        rollouts.act(svc(app), "support-bot", "promote", actor="user:alice", reason="up", now=now - 1800)
    outage = seed.SourceStatus("prometheus", available=False, unavailable_since=1_700_000_000.0,
                               error="connection refused")
    policy = svc(app).policies.get("support-default").policy
    seed.store_report(svc(app), "support-bot", report=seed.tier_report(
        policy, stage="canary", tier=0, at=now, tier_started_at=now - 1800, signals=None, source=outage))
    signed_in(client, "alice")
    for path in ("/", "/partials/overview", "/agents/support-bot"):
        page = client.get(path).get_data(as_text=True)
        assert "Metrics unavailable since 2023-11-14 22:13:20 UTC" in page, path
        assert "connection refused" in page


def test_odd_gate_reports_and_a_vanished_policy_still_render(
        app: Flask, client: FlaskClient, users: dict[str, str]) -> None:
    _support_bot(app)
    with svc(app).db.transaction() as db:
        agent = rollout_records.get_agent("support-bot", db=db)
        for at, report in ((1.0, {"checks": "nope", "values": [1]}), (2.0, {"checks": [{"value": "x"}, 3],
                           "metrics_source": {"available": False}, "values": {"error_rate": "NaN"}}),
                           (3.0, {"soak": {"required_s": "long"}, "values": {"error_rate": float("nan")}})):
            db.add(GateEvaluation(rollout_id=agent.rollout_id or 0, agent_id=agent.id or 0, at=time.time() + at,
                                  stage="twin", tier=0, window_key=uuid.uuid4().hex, result="odd",
                                  report=json.dumps(report), policy_revision="r"))
        db.add(Agent(name="orphan", policy="deleted-policy", created_at=time.time()))
    signed_in(client, "alice")
    for path in ("/", "/agents/support-bot", "/agents/support-bot?events=all", "/agents/orphan", "/policies"):
        assert client.get(path).status_code == 200, path
    assert "is not loaded" in client.get("/").get_data(as_text=True)


def test_history_is_paginated_and_can_include_gate_evaluations(
        app: Flask, client: FlaskClient, users: dict[str, str]) -> None:
    now = time.time()
    _support_bot(app, at=now - 7200)
    for i in range(15):
        rollouts.act(svc(app), "support-bot", "pause", actor="user:alice", reason=f"pause {i}", now=now - 3000 + i)
        rollouts.act(svc(app), "support-bot", "resume", actor="user:alice", reason=f"resume {i}", now=now - 2000 + i)
    report = {"stage": "twin", "tier": 0, "result": "hold", "evaluated_at": now, "reasons": ["runs: 3 of 50"],
              "values": {"runs": 3}}
    seed.store_report(svc(app), "support-bot", report=report)
    signed_in(client, "alice")
    first = client.get("/agents/support-bot").get_data(as_text=True)
    assert "page 1 of 2 (31 entries)" in first and "resume 14" in first and "gate:hold" not in first
    assert "ship v7" in client.get("/agents/support-bot?page=2").get_data(as_text=True)
    with_gates = client.get("/agents/support-bot?events=all").get_data(as_text=True)
    assert "gate:hold" in with_gates and "runs: 3 of 50" in with_gates


def test_policy_view_shows_each_agents_policy_revision_and_text(
        app: Flask, client: FlaskClient, users: dict[str, str]) -> None:
    _support_bot(app)
    loaded = svc(app).policies.get("support-default")
    signed_in(client, "victor")
    page = client.get("/policies").get_data(as_text=True)
    assert 'data-agent="support-bot"' in page and loaded.revision[:12] in page
    assert "refund_payment: irreversible" in page and loaded.path in page
    stored = client.get(f"/policies?revision={loaded.revision}")
    assert stored.status_code == 200 and "first governed something" in stored.get_data(as_text=True)
    assert client.get("/policies?revision=unknown").status_code == 404


def test_unknown_agent_is_a_404_page(client: FlaskClient, users: dict[str, str]) -> None:
    signed_in(client, "alice")
    response = client.get("/agents/nobody")
    assert response.status_code == 404 and "no agent named" in response.get_data(as_text=True)


def test_a_lost_database_is_a_503_page_not_a_crash(app: Flask, client: FlaskClient, users: dict[str, str],
                                                   tmp_path: Path) -> None:
    signed_in(client, "alice")
    svc(app).db.dispose()
    (tmp_path / "gatekeeper.db").unlink()  # the next connection finds an empty file: no tables
    response = client.get("/")
    assert response.status_code == 503
    assert "database is not answering" in response.get_data(as_text=True)


def test_the_session_trace_page_is_for_signed_in_people_viewers_included(
        app: Flask, client: FlaskClient, users: dict[str, str]) -> None:
    _support_bot(app)
    live = seed.live_session(svc(app), "support-bot", at=time.time() - 60)
    seed.record_call(svc(app), live, tool="refund_payment", tool_class="irreversible", verdict="deny",
                     at=time.time() - 50, reason="max_calls", arguments={"card_number": "[redacted]"})
    assert client.get(f"/sessions/{live}").status_code == 302
    signed_in(client, "victor")
    page = client.get(f"/sessions/{live}").get_data(as_text=True)
    assert 'class="call irreversible"' in page and "[redacted]" in page and "max calls" in page
    missing = client.get("/sessions/nope")
    assert missing.status_code == 404 and "no session" in missing.get_data(as_text=True)


def test_deciding_from_the_agent_page_returns_there_and_never_off_site(
        app: Flask, client: FlaskClient, users: dict[str, str]) -> None:
    _support_bot(app)
    first, second = (seed.open_approval(svc(app), "support-bot", tool="send_email", tool_class="irreversible",
                                        cost=0.01, preview="hi", at=time.time()) for _ in range(2))
    token = signed_in(client, "alice")
    back = client.post(f"/approvals/{first}/approve",
                       data={"csrf_token": token, "reason": "ok", "next": "/agents/support-bot"})
    away = client.post(f"/approvals/{second}/reject",
                       data={"csrf_token": token, "reason": "no", "next": "//evil.example/"})
    assert (back.location, away.location) == ("/agents/support-bot", "/approvals")
