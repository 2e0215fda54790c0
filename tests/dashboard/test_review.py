"""A reviewer's work in real Chromium: arguments and traces, cancelled approvals, no stale gate report,
and keyboard-only approving and promoting while the page refreshes itself (issue 11 §4, §5, §8)."""

from __future__ import annotations

import time
from typing import Any

from flask import Flask
from sqlmodel import select

from gatekeeper import rollouts
from gatekeeper.store import rollout_records
from gatekeeper.store.models import Approval
from tests.support import seed
from tests.support.app import svc
from tests.support.dashboard import LiveServer, browser_sign_in, screenshot

CARD = "[redacted]"
FAST_REFRESH = "window.gatekeeperRefreshMs = 300;"


def _support_bot(app: Flask, *, at: float) -> None:
    seed.start(svc(app), "support-bot", policy="support-default", stable="v6", candidate="v7", at=at)


def _approval_state(app: Flask, approval_id: str) -> str:
    with svc(app).db.reading() as db:
        return db.exec(select(Approval.state).where(Approval.id == approval_id)).one()


def test_an_approval_shows_masked_arguments_and_links_to_the_session_trace(
        live_server: LiveServer, users: dict[str, str], page: Any) -> None:
    app, now = live_server.app, time.time()
    _support_bot(app, at=now - 600)
    live = seed.live_session(svc(app), "support-bot", at=now - 120)
    seed.record_call(svc(app), live, tool="lookup_customer", tool_class="read_only", verdict="allow", at=now - 100,
                     arguments={"customer": "C-1042"}, outcome=("ok", 0.01, 80.0))
    approval = seed.approval_for(svc(app), live, tool="refund_payment", tool_class="irreversible", cost=0.35,
                                 at=now - 60, arguments={"amount": 120, "card_number": CARD, "customer": "C-1042"})
    browser_sign_in(page, live_server.url, "alice")
    page.goto(f"{live_server.url}/approvals")
    row = page.locator(f"tr[data-approval='{approval}']")
    shown = row.locator("[data-testid=arguments]").inner_text()
    assert f'"card_number": "{CARD}"' in shown and '"amount": 120' in shown
    assert "stage twin" in row.inner_text() and "irreversible" in row.inner_text()
    assert row.locator("button[data-verdict=approve]").get_attribute("aria-label").startswith(
        "Approve refund_payment of support-bot")

    row.locator("[data-testid=trace-link]").click()
    page.wait_for_url(f"**/sessions/{live}#decision-*")
    calls = page.locator("tr.call")
    assert [calls.nth(i).locator("strong").inner_text() for i in range(calls.count())] == [
        "lookup_customer", "refund_payment"]
    asked = page.locator("tr.call.irreversible")
    assert asked.count() == 1 and CARD in asked.inner_text() and "approval required" in asked.inner_text()
    assert asked.locator("[data-testid=approval-state]").inner_text() == "pending"
    assert page.url.endswith(f"#{asked.get_attribute('id')}")
    assert screenshot(page, "session").stat().st_size > 10_000


def test_approvals_of_an_ended_session_show_as_cancelled_and_cannot_be_decided(
        live_server: LiveServer, users: dict[str, str], page: Any) -> None:
    app, now = live_server.app, time.time()
    _support_bot(app, at=now - 600)
    ended = seed.live_session(svc(app), "support-bot", at=now - 300, status="ok")
    gone = seed.approval_for(svc(app), ended, tool="send_email", tool_class="irreversible", cost=0.01, at=now - 280,
                             arguments={"to": "c-1042@example.com"}, state="cancelled")
    browser_sign_in(page, live_server.url, "alice")
    page.goto(f"{live_server.url}/approvals")
    assert page.locator("[data-testid=no-approvals]").is_visible()
    decided = page.locator(f"[data-testid=decided] tr[data-approval='{gone}']")
    assert decided.get_attribute("data-state") == "cancelled"
    assert decided.locator(".badge.approval-cancelled").inner_text() == "cancelled"
    page.goto(f"{live_server.url}/agents/support-bot")
    assert page.locator("[data-testid=no-agent-approvals]").is_visible()
    listed = page.locator(f"[data-testid=agent-decided] li[data-approval='{gone}']")
    assert listed.locator(".badge").first.inner_text() == "cancelled" and "its session ended" in listed.inner_text()
    listed.locator("a").click()
    page.wait_for_url(f"**/sessions/{ended}#decision-*")
    assert page.locator("[data-testid=approval-state]").inner_text() == "cancelled"
    token = page.locator("meta[name=csrf-token]").get_attribute("content")
    forced = page.request.post(f"{live_server.url}/approvals/{gone}/approve",
                               form={"csrf_token": token, "reason": "too late"}, max_redirects=0)
    assert forced.status == 409 and _approval_state(app, gone) == "cancelled"


def test_after_a_kill_the_agent_page_refreshes_to_no_stale_canary_report(
        live_server: LiveServer, users: dict[str, str], page: Any) -> None:
    app, now = live_server.app, time.time()
    services = svc(app)
    _support_bot(app, at=now - 150 * 60)
    seed.canary_history(services, "support-bot", policy=services.policies.get("support-default").policy, now=now)
    page.add_init_script(FAST_REFRESH)
    browser_sign_in(page, live_server.url, "alice")
    page.goto(f"{live_server.url}/agents/support-bot")
    assert page.locator("[data-testid=gate-report] tr[data-check]").count() == 5  # sessions and 4 limits
    assert page.locator("[data-testid=tier-label]").inner_text() == "canary 5%"

    rollouts.act(services, "support-bot", "kill", actor="kill_switch", reason="error spike", now=time.time())
    page.wait_for_selector("[data-testid=gate-report] [data-testid=superseded]")  # no reload: the page refreshed
    report = page.locator("[data-testid=gate-report]")
    assert report.locator("tr[data-check]").count() == 0 and report.locator("[data-testid=gate-result]").count() == 0
    assert "superseded by kill to shadow" in " ".join(report.inner_text().split())
    assert page.locator("[data-testid=tier-label]").inner_text() == "shadow"
    assert page.locator("[data-testid=state]").first.inner_text() == "killed"
    page.goto(live_server.url)
    row = page.locator("tr[data-agent=support-bot]")
    assert row.locator(".figure").count() == 0 and "no gate evaluation at shadow yet" in row.inner_text()


def _tab_to(page: Any, predicate: str, *, limit: int = 120) -> None:
    """Press Tab until `predicate` (a JS expression on `el`) holds for the focused element."""
    for _ in range(limit):
        page.keyboard.press("Tab")
        if page.evaluate(f"(() => {{ const el = document.activeElement; return !!el && ({predicate}); }})()"):
            return
    raise AssertionError(f"Tab never reached an element where {predicate}")


def _remember_focus(page: Any) -> None:
    page.evaluate("() => { window.__focused = document.activeElement; }")


def _focus_kept(page: Any) -> bool:
    return bool(page.evaluate("() => document.activeElement === window.__focused && document.hasFocus()"))


def test_keyboard_only_approves_a_call_and_promotes_while_the_page_refreshes_and_focus_stays(
        live_server: LiveServer, users: dict[str, str], page: Any) -> None:
    app, now = live_server.app, time.time()
    _support_bot(app, at=now - 600)
    live = seed.live_session(svc(app), "support-bot", at=now - 120)
    refund = seed.approval_for(svc(app), live, tool="refund_payment", tool_class="irreversible", cost=0.35,
                               at=now - 60, arguments={"amount": 120, "card_number": CARD})
    page.add_init_script(FAST_REFRESH)
    browser_sign_in(page, live_server.url, "alice")
    page.goto(f"{live_server.url}/agents/support-bot")
    rows = "[data-testid=agent-approvals] tr[data-approval]"

    _tab_to(page, f"el.id === 'reason-{refund}'")
    _remember_focus(page)
    # Another call starts waiting, older, so its row lands above the focused one; the page refreshes by itself.
    seed.approval_for(svc(app), live, tool="send_email", tool_class="irreversible", cost=0.01, at=now - 90,
                      arguments={"to": "c-1042@example.com"})
    page.wait_for_function(f"() => document.querySelectorAll('{rows}').length === 2")
    assert _focus_kept(page)
    page.keyboard.type("customer C-1042 was charged twice")
    page.keyboard.press("Enter")  # in an irreversible call's reason: a new line, never an approval
    page.wait_for_timeout(600)
    assert _approval_state(app, refund) == "pending" and _focus_kept(page)
    page.keyboard.press("Tab")
    assert page.evaluate("() => document.activeElement.dataset.verdict") == "approve"
    page.keyboard.press("Enter")
    page.wait_for_selector(".flash-ok")
    assert _approval_state(app, refund) == "approved"
    assert page.url.endswith("/agents/support-bot")

    _tab_to(page, "el.dataset.action === 'promote'")
    _remember_focus(page)
    seed.approval_for(svc(app), live, tool="update_ticket", tool_class="reversible", cost=0.01, at=time.time(),
                      arguments={"ticket": 88121})
    page.wait_for_function(f"() => document.querySelectorAll('{rows}').length === 2")
    assert _focus_kept(page)
    page.keyboard.press("Enter")
    assert page.evaluate("() => document.activeElement.name") == "reason"  # the dialog opened on its reason
    page.keyboard.type("twin runs look clean")
    _tab_to(page, "el.matches('[data-confirm]')", limit=5)
    page.keyboard.press("Enter")
    page.wait_for_selector(".flash-ok")
    with svc(app).db.reading() as db:
        rollout = rollout_records.current_rollout(rollout_records.get_agent("support-bot", db=db), db=db)
        assert rollout is not None and (rollout.stage, rollout.state) == ("shadow", "progressing")


def test_a_half_typed_reason_survives_the_agent_pages_refresh(
        live_server: LiveServer, users: dict[str, str], page: Any) -> None:
    app, now = live_server.app, time.time()
    _support_bot(app, at=now - 600)
    live = seed.live_session(svc(app), "support-bot", at=now - 120)
    refund = seed.approval_for(svc(app), live, tool="refund_payment", tool_class="irreversible", cost=0.35,
                               at=now - 60, arguments={"amount": 120})
    page.add_init_script(FAST_REFRESH)
    browser_sign_in(page, live_server.url, "alice")
    page.goto(f"{live_server.url}/agents/support-bot")
    page.fill(f"#reason-{refund}", "checking with fin")
    page.locator("h1").click()  # focus elsewhere: the typed text alone must keep the section as it is
    rollouts.act(svc(app), "support-bot", "pause", actor="user:bob", reason="elsewhere", now=time.time())
    page.wait_for_timeout(1500)
    assert page.input_value(f"#reason-{refund}") == "checking with fin"
    page.fill(f"#reason-{refund}", "")
    page.wait_for_function("() => document.querySelector('[data-testid=state]').textContent.trim() === 'paused'")


def test_approval_controls_and_confirmations_name_what_they_act_on(
        live_server: LiveServer, users: dict[str, str], page: Any) -> None:
    app, now = live_server.app, time.time()
    _support_bot(app, at=now - 600)
    live = seed.live_session(svc(app), "support-bot", at=now - 120)
    refund = seed.approval_for(svc(app), live, tool="refund_payment", tool_class="irreversible", cost=0.35,
                               at=now - 60, arguments={"amount": 120})
    browser_sign_in(page, live_server.url, "alice")
    page.goto(f"{live_server.url}/approvals")
    what = f"refund_payment of support-bot (approval {refund[:8]})"
    assert page.get_by_role("button", name=f"Reject {what}").count() == 1
    assert page.get_by_role("button", name=f"Approve {what}").count() == 1
    assert page.get_by_role("textbox", name=f"Reason for approving or rejecting {what}").count() == 1
    page.goto(f"{live_server.url}/agents/support-bot")
    page.get_by_role("button", name="Kill support-bot to twin, killed").click()
    dialog = page.get_by_role("dialog", name="Kill support-bot?")
    assert dialog.is_visible()
    assert dialog.get_by_role("button", name="Confirm: kill support-bot").count() == 1
    dialog.get_by_role("button", name="Cancel: do not kill support-bot").press("Enter")
    assert not dialog.is_visible()
    assert page.evaluate("() => document.activeElement.dataset.action") == "kill"  # focus back on its opener
