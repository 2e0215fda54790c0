"""The dashboard in real headless Chromium against the real app on a loopback port (issue 5's must-shows)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from flask import Flask

from gatekeeper import rollouts
from gatekeeper.client import Gatekeeper
from gatekeeper.store import rollout_records
from tests.support import seed
from tests.support.app import svc
from tests.support.dashboard import LiveServer, browser_sign_in, screenshot


def _rollout_at_twin(app: Flask) -> None:
    seed.start(svc(app), "support-bot", policy="support-default", stable="v6", candidate="v7", at=time.time() - 60)


def _tier_and_state(app: Flask, agent: str) -> tuple[str, int, str]:
    with svc(app).db.reading() as db:
        rollout = rollout_records.current_rollout(rollout_records.get_agent(agent, db=db), db=db)
        assert rollout is not None
        return rollout.stage, rollout.tier, rollout.state


def test_release_manager_signs_in_sees_the_agent_promotes_it_and_sees_the_new_tier(
        live_server: LiveServer, users: dict[str, str], page: Any) -> None:
    _rollout_at_twin(live_server.app)
    browser_sign_in(page, live_server.url, "alice")
    row = page.locator("tr[data-agent=support-bot]")
    assert row.locator("[data-testid=current-tier]").inner_text() == "twin"
    row.locator("a.agent-name").click()
    assert page.locator("[data-testid=tier-label]").inner_text() == "twin"

    page.click("button[data-action=promote]")
    dialog = page.locator("#dialog-promote")
    assert "shadow, progressing" in dialog.inner_text()
    dialog.locator("textarea[name=reason]").fill("twin runs look clean")
    dialog.locator("button[data-confirm]").click()

    page.wait_for_selector(".flash-ok")
    assert page.locator("[data-testid=tier-label]").inner_text() == "shadow"
    assert page.locator("[data-testid=current-tier]").inner_text() == "shadow"
    entry = page.locator(".timeline .entry").first
    assert "user:alice" in entry.inner_text() and "twin runs look clean" in entry.inner_text()
    assert _tier_and_state(live_server.app, "support-bot") == ("shadow", 0, "progressing")


def test_confirmation_can_be_cancelled_and_a_reason_is_required(
        live_server: LiveServer, users: dict[str, str], page: Any) -> None:
    _rollout_at_twin(live_server.app)
    browser_sign_in(page, live_server.url, "alice")
    page.goto(f"{live_server.url}/agents/support-bot")
    page.click("button[data-action=kill]")
    page.locator("#dialog-kill button[data-confirm]").click()  # empty reason: the browser refuses
    assert page.locator("#dialog-kill").is_visible()
    page.locator("#dialog-kill button[data-close]").click()
    assert not page.locator("#dialog-kill").is_visible()
    assert _tier_and_state(live_server.app, "support-bot") == ("twin", 0, "progressing")


def test_viewer_finds_actions_disabled_and_a_forged_post_refused(
        live_server: LiveServer, users: dict[str, str], page: Any) -> None:
    _rollout_at_twin(live_server.app)
    browser_sign_in(page, live_server.url, "victor")
    page.goto(f"{live_server.url}/agents/support-bot")
    buttons = page.locator("[data-testid=actions] button[data-action]")
    assert buttons.count() == 7
    assert all(buttons.nth(i).is_disabled() for i in range(buttons.count()))
    assert page.locator("dialog").count() == 0

    token = page.locator("meta[name=csrf-token]").get_attribute("content")
    forged = page.request.post(f"{live_server.url}/agents/support-bot/actions/promote",
                               form={"csrf_token": token, "reason": "I am only a viewer"}, max_redirects=0)
    assert forged.status == 403
    assert "act on nothing" in forged.text()
    assert _tier_and_state(live_server.app, "support-bot") == ("twin", 0, "progressing")


def test_a_post_without_the_csrf_token_is_refused(live_server: LiveServer, users: dict[str, str], page: Any) -> None:
    _rollout_at_twin(live_server.app)
    browser_sign_in(page, live_server.url, "alice")
    url = f"{live_server.url}/agents/support-bot/actions/promote"
    missing = page.request.post(url, form={"reason": "no token"}, max_redirects=0)
    wrong = page.request.post(url, form={"reason": "bad token", "csrf_token": "forged"}, max_redirects=0)
    assert (missing.status, wrong.status) == (400, 400)
    assert "CSRF" in missing.text()
    assert _tier_and_state(live_server.app, "support-bot") == ("twin", 0, "progressing")


def test_overview_refreshes_by_itself(live_server: LiveServer, users: dict[str, str], page: Any) -> None:
    _rollout_at_twin(live_server.app)
    page.add_init_script("window.gatekeeperRefreshMs = 300;")
    browser_sign_in(page, live_server.url, "alice")
    page.locator("tr[data-agent=support-bot] a.agent-name").focus()
    tier = page.locator("tr[data-agent=support-bot] [data-testid=current-tier]")
    assert tier.inner_text() == "twin"
    rollouts.act(svc(live_server.app), "support-bot", "pause", actor="user:bob", reason="elsewhere", now=time.time())
    page.wait_for_function(
        "() => document.querySelector('tr[data-agent=support-bot] [data-testid=state]').textContent === 'paused'",
        timeout=12_000)
    assert page.url.rstrip("/") == live_server.url  # no navigation: the rows were fetched and updated in place
    assert page.evaluate("() => document.activeElement.textContent") == "support-bot"  # focus stayed on the link


def test_an_approval_asked_through_the_sdk_is_approved_in_the_browser_and_the_repeat_is_allowed(
        live_server: LiveServer, users: dict[str, str], page: Any, make_token: Callable[..., dict[str, str]]) -> None:
    _rollout_at_twin(live_server.app)
    token = make_token("agent", agent="support-bot")["Authorization"].removeprefix("Bearer ")
    agent = Gatekeeper(live_server.url, token, timeout=5.0).start_session("support-bot", environment="twin")
    asked = agent.decide("send_email", 0.01, preview="Email C-1042: your refund is on its way")
    assert (asked.verdict, asked.reason) == ("approval_required", "approval_required")
    assert asked.approval_id is not None

    browser_sign_in(page, live_server.url, "alice")
    page.goto(f"{live_server.url}/approvals")
    row = page.locator(f"tr[data-approval='{asked.approval_id}']")
    assert "irreversible" in row.get_attribute("class")
    assert "Email C-1042: your refund is on its way" in row.inner_text()
    row.locator("[name=reason]").fill("customer asked for it")
    row.locator("button[data-verdict=approve]").click()
    page.wait_for_selector(".flash-ok")
    assert page.locator("[data-testid=no-approvals]").is_visible()
    assert "user:alice" in page.locator("table.decided").inner_text()

    assert agent.client.approval(asked.approval_id)["state"] == "approved"
    repeated = agent.decide("send_email", 0.01, approval_id=asked.approval_id)
    assert repeated.verdict == "allow"


def test_screenshots_of_overview_agent_page_and_approvals(
        live_server: LiveServer, users: dict[str, str], page: Any) -> None:
    app, now = live_server.app, time.time()
    services = svc(app)
    support = services.policies.get("support-default").policy
    seed.start(services, "support-bot", policy="support-default", stable="v6", candidate="v7", at=now - 150 * 60)
    seed.canary_history(services, "support-bot", policy=support, now=now)
    _metrics_outage(app, now=now)
    rollouts.register_agent(services, "billing-agent", policy="billing", stable_version="v3", now=now - 86400)
    _approvals(app, now=now)

    browser_sign_in(page, live_server.url, "alice")
    assert page.locator("tr[data-agent]").count() == 3
    assert "Metrics unavailable since" in page.locator("[data-testid=metrics-unavailable]").first.inner_text()
    assert screenshot(page, "overview").stat().st_size > 10_000
    page.goto(f"{live_server.url}/agents/support-bot")
    assert page.locator("[data-testid=tier-label]").inner_text() == "canary 5%"
    assert page.locator("[data-testid=chart-error_rate] .marker").count() == 3
    assert page.locator("[data-testid=gate-report] tr[data-check]").count() == 5  # with overrun_rate
    assert screenshot(page, "agent").stat().st_size > 10_000
    page.goto(f"{live_server.url}/approvals")
    assert page.locator("tr.approval.irreversible").count() == 2
    assert screenshot(page, "approvals").stat().st_size > 10_000


def _metrics_outage(app: Flask, *, now: float) -> None:
    services = svc(app)
    coding = services.policies.get("coding-agent").policy
    seed.start(services, "code-assistant", policy="coding-agent", stable="v12", candidate="v13", at=now - 3600)
    for _ in range(2):
        rollouts.act(services, "code-assistant", "promote", actor="user:alice", reason="manual", now=now - 1800)
    outage = seed.SourceStatus("prometheus", available=False, unavailable_since=now - 420,
                               error="GET http://prometheus:9090/api/v1/query: connection refused")
    seed.store_report(services, "code-assistant", report=seed.tier_report(
        coding, stage="canary", tier=0, at=now - 20, tier_started_at=now - 1800, signals=None, source=outage))
    rollouts.act(services, "code-assistant", "hold", actor="scheduler", reason="metrics unavailable: holding",
                 now=now - 400)


def _approvals(app: Flask, *, now: float) -> None:
    services = svc(app)
    seed.open_approval(services, "support-bot", tool="refund_payment", tool_class="irreversible", cost=0.35,
                       preview="Refund $120.00 to customer C-1042 for order #88121 (charged twice)", at=now - 95,
                       arguments={"amount": 120.0, "currency": "USD", "customer": "C-1042", "order": 88121,
                                  "card_number": "[redacted]"})
    seed.open_approval(services, "support-bot", tool="send_email", tool_class="irreversible", cost=0.01,
                       preview="Email C-1042: 'Your refund of $120.00 is on its way'", at=now - 30,
                       arguments={"to": "customer C-1042", "subject": "Your refund of $120.00 is on its way"})
    seed.open_approval(services, "code-assistant", tool="open_pull_request", tool_class="reversible", cost=0.02,
                       preview="Open PR 'Fix flaky checkout test' from branch agent/fix-412", at=now - 600)
