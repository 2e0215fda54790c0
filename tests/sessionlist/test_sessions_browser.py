"""In real headless Chromium: from the agent page to its twin runs, and from a failed run to why it failed."""

from __future__ import annotations

from typing import Any

from tests.support.dashboard import LiveServer, browser_sign_in, screenshot
from tests.support.runtime import Runtime


def test_a_viewer_finds_a_failed_twin_run_from_the_agent_page_and_sees_why(
        runtime: Runtime, live_server: LiveServer, users: dict[str, str], page: Any) -> None:
    runtime.setup(stage="twin")
    runtime.session()  # a live session, not a twin run
    made = {}
    for name, tools in (("passing", ["lookup_customer", "refund_payment", "send_email"]),
                        ("failing", ["lookup_customer", "update_ticket"])):
        session = runtime.ok(runtime.client.post("/v1/sessions", json={
            "agent": "bot", "environment": "twin", "scenario": "refund-request"}, headers=runtime.agent))["session_id"]
        for tool in tools:
            runtime.decide(session, tool)
        runtime.ok(runtime.client.post(f"/v1/sessions/{session}/end", json={"status": "ok"}, headers=runtime.agent))
        made[name] = session

    browser_sign_in(page, live_server.url, "victor")
    page.goto(f"{live_server.url}/agents/bot")
    page.click("[data-testid=sessions-link]")
    page.click("[data-testid=twin-filter]")
    rows = page.locator("[data-testid=sessions] tr[data-session]")
    assert [rows.nth(i).get_attribute("data-session") for i in range(rows.count())] == [
        made["failing"], made["passing"]]
    screenshot(page, "agent-sessions-twin")
    rows.first.locator("a").click()
    page.wait_for_selector("[data-testid=twin-verdict]")
    assert page.locator("[data-testid=verdict]").inner_text() == "failed"
    assert page.locator("[data-testid=verdict-problems] li").all_inner_texts() == [
        "expected refund_payment in order ['lookup_customer', 'refund_payment', 'send_email']",
        "called forbidden tool update_ticket"]
    screenshot(page, "twin-run-verdict")
