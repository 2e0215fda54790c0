"""Guarded tools against the real app on a loopback port: declared once, bound per run, finishing the job."""

from __future__ import annotations

import asyncio
import json

import pytest
from flask import Flask
from gatekeeper_client import (
    AsyncGatekeeper,
    Denied,
    Gatekeeper,
    NoSession,
    NotApproved,
    Refusal,
    Shadowed,
    current_session,
    guarded,
)

from tests.support.runtime import Runtime, counts, key_for
from tests.support.sdk import approve_when_asked

ran: list[str] = []


@guarded("update_ticket", cost=0.05, preview=lambda ticket, note="": f"update {ticket}",
         actual_cost=lambda result: 0.02)
def update_ticket(ticket: str, note: str = "") -> str:
    ran.append(f"update {ticket}")
    return f"updated {ticket}"


@guarded("send_email", cost=0.01, approval_timeout=10)
def send_email(to: str, body: str) -> str:
    ran.append(f"email {to}")
    return "sent"


@guarded("refund_payment", cost=0.02)
async def refund_payment(order: str) -> str:
    ran.append(f"refund {order}")
    return "refunded"


@guarded("search_kb", cost=0.002, read_only=True)
async def search_kb(query: str) -> list[str]:
    ran.append(f"search {query}")
    return [f"a page about {query}"]


@pytest.fixture(autouse=True)
def _clear() -> None:
    ran.clear()


def _candidate_key(runtime: Runtime, stage: str = "canary", n: int = 0) -> str:
    runtime.setup(stage, 0)
    return key_for("bot", runtime.rollout_id, 1.0 if stage == "canary" else 50.0, inside=True, start=n)


def test_one_tool_object_serves_every_session_and_reports_itself(runtime: Runtime, gk: Gatekeeper,
                                                                 app: Flask) -> None:
    runtime.setup("canary", 0)
    first, second = (key_for("bot", runtime.rollout_id, 1.0, inside=False, start=n) for n in (0, 500))
    with gk.session("bot", session_key=first) as one:
        assert update_ticket("T-1", note="late") == "updated T-1"
    with gk.session("bot", session_key=second) as two:
        assert update_ticket("T-2") == "updated T-2"
    assert ran == ["update T-1", "update T-2"] and one.session_id != two.session_id
    rows = [counts(app, "SELECT arguments, outcome_status, actual_cost_micros, latency_ms, preview, status"
                        " FROM decisions JOIN sessions ON sessions.id = decisions.session_id"
                        " WHERE session_id = :id", id=s.session_id) for s in (one, two)]
    assert json.loads(rows[0][0]) == {"ticket": "T-1", "note": "late"} and json.loads(rows[1][0]) == {"ticket": "T-2"}
    assert [(r[1], r[2], r[4]) for r in rows] == [("ok", 20_000, "update T-1"), ("ok", 20_000, "update T-2")]
    assert all(r[3] is not None and r[3] > 0 for r in rows)
    assert [r[5] for r in rows] == ["ok", "ok"]  # `with` ended both sessions
    with pytest.raises(NoSession):
        update_ticket("T-3")
    session = gk.start_session("bot", session_key=first)
    assert update_ticket.using(session)("T-4") == "updated T-4"  # an explicit session still works

    class Desk:
        @guarded("update_ticket", cost=0.01)
        def close(self, ticket: str) -> str:
            return f"closed {ticket}"

    with session.bound():
        assert Desk().close("T-5") == "closed T-5"
    assert counts(app, "SELECT arguments FROM decisions ORDER BY rowid DESC LIMIT 1")[0] == '{"ticket":"T-5"}'


def test_deny_and_shadow_raise_or_return_the_servers_message(runtime: Runtime, gk: Gatekeeper,
                                                             token: str, live_url: str) -> None:
    runtime.setup("shadow", 0)
    key = key_for("bot", runtime.rollout_id, 50.0, inside=True)
    with gk.session("bot", session_key=key) as live, pytest.raises(Denied) as denied:
        asyncio.run(refund_payment("O-1"))  # an async tool over a sync session: its requests go to a thread
    assert denied.value.reason == "sequence_before" and "lookup_customer" in denied.value.message
    mirror = live.mirror_session()
    assert mirror is not None and mirror.version == "v2"
    with mirror.bound():  # the candidate's mirror: a shadowed call returns its message, so the run goes on
        shadowed = update_ticket("T-1")
    assert isinstance(shadowed, Refusal) and shadowed.verdict == "shadow"
    mirror.state.on_refusal = None  # outside the shadow helper, the client's setting (raise) applies
    with pytest.raises(Shadowed) as raised:
        update_ticket.using(mirror)("T-1")
    assert raised.value.message == shadowed
    returning = Gatekeeper(live_url, token, on_refusal="return")
    with returning.session("bot", session_key=key):
        refused = asyncio.run(refund_payment("O-2"))
    assert isinstance(refused, Refusal) and refused == denied.value.message and refused.verdict == "deny"
    assert ran == []


def test_the_guard_waits_for_a_person_then_runs_the_tool_once(runtime: Runtime, gk: Gatekeeper, app: Flask) -> None:
    key = _candidate_key(runtime)
    approver = approve_when_asked(runtime)
    with gk.session("bot", session_key=key) as session:
        assert send_email("ana@example.com", "Your refund is on its way") == "sent"
    approver.join(timeout=10)
    assert ran == ["email ana@example.com"]
    rows = counts(app, "SELECT count(*), sum(outcome_status = 'ok'), count(approval_id) FROM decisions"
                       " WHERE session_id = :id", id=session.session_id)
    assert rows == (2, 1, 2)  # the first decision named the approval; the repeated one ran, once


def test_a_rejected_or_unanswered_approval_is_refused(runtime: Runtime, gk: Gatekeeper, live_url: str,
                                                      token: str) -> None:
    key = _candidate_key(runtime)
    impatient = guarded("send_email", cost=0.01, approval_timeout=0.2)(lambda to, body: ran.append(to))
    with gk.session("bot", session_key=key), pytest.raises(NotApproved) as waited:
        impatient("bo@example.com", "hi")
    assert waited.value.reason == "approval_timeout" and "0.2 seconds" in waited.value.message
    assert gk.approval(waited.value.approval_id or "")["state"] == "cancelled"  # its session ended
    rejecter = approve_when_asked(runtime, action="reject")
    with gk.session("bot", session_key=key), pytest.raises(NotApproved) as rejected:
        send_email("cy@example.com", "hi")
    rejecter.join(timeout=10)
    assert ran == [] and rejected.value.reason == "approval_rejected" and "rejected" in rejected.value.message


def test_async_tools_in_an_async_session(runtime: Runtime, token: str, live_url: str, app: Flask) -> None:
    key = _candidate_key(runtime)


    async def email(to: str) -> str:
        await asyncio.sleep(0)
        ran.append(f"email {to}")
        return "sent"

    async def conversation() -> tuple[list[str], str, str | None]:
        async with AsyncGatekeeper(live_url, token, approval_poll=0.05) as agk, \
                agk.session("bot", session_key=key) as session:
            pages = await search_kb("refunds")
            with pytest.raises(NoSession):
                update_ticket("T-1")  # a sync tool cannot block an async session's event loop
            approver = approve_when_asked(runtime)
            sent = await guarded("send_email", cost=0.01)(email)("ana@example.com")  # waits on the loop
            approver.join(timeout=10)
            return pages, sent, session.session_id

    pages, sent, session_id = asyncio.run(conversation())
    assert pages == ["a page about refunds"] and sent == "sent"
    assert ran == ["search refunds", "email ana@example.com"]
    assert counts(app, "SELECT group_concat(tool || ':' || verdict || ':' || coalesce(outcome_status, '-'), ' ')"
                       " FROM decisions WHERE session_id = :id", id=session_id) == (
        "search_kb:allow:ok send_email:approval_required:- send_email:allow:ok",)


def test_run_serves_the_user_from_stable_and_shadows_the_candidate(runtime: Runtime, gk: Gatekeeper,
                                                                   app: Flask) -> None:
    runtime.setup("shadow", 0)
    seen: list[tuple[str | None, object]] = []

    def conversation(ticket: str) -> str:
        session = current_session()
        assert session is not None
        result = update_ticket(ticket)
        seen.append((session.version, result))
        if session.version == "v2":
            raise RuntimeError("the candidate crashed")  # evidence for the shadow gate, never the user's problem
        return result

    inside = key_for("bot", runtime.rollout_id, 50.0, inside=True)
    assert gk.run("bot", conversation, "T-1", session_key=inside) == "updated T-1"
    assert seen[0] == ("v1", "updated T-1") and seen[1][0] == "v2" and isinstance(seen[1][1], Refusal)
    assert ran == ["update T-1"]  # the candidate's reversible call was shadowed, not run
    assert counts(app, "SELECT group_concat(arm || ':' || status, ' ') FROM sessions") == ("stable:ok candidate:error",)
    outside = key_for("bot", runtime.rollout_id, 50.0, inside=False)
    assert gk.run("bot", conversation, "T-2", session_key=outside) == "updated T-2" and len(seen) == 3
