"""Incident → twin in real headless Chromium: the kill switch's tripping sessions are offered as scenarios."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from tests.support.dashboard import LiveServer, browser_sign_in, screenshot
from tests.support.runtime import Runtime


def trip_the_kill_switch(runtime: Runtime) -> tuple[set[str], str]:
    """Run candidate sessions at canary 1% until the error rate trips the kill switch; return the erring ones."""
    erring, clean = set(), ""
    for n, tools in enumerate([("lookup_customer", "update_ticket", "search_kb")] * 3 + [("lookup_customer",)]):
        session = runtime.session(candidate=True, percent=1.0)["session_id"]  # 10 outcomes, 4 of them errors
        for tool in tools:
            decision = runtime.decide(session, tool, arguments={"ticket": f"T-{n}"})
            assert decision["verdict"] == "allow", decision
            failing = n % 2 == 0 and tool != "lookup_customer"
            runtime.report(decision["decision_id"], "error" if failing else "ok")
            erring |= {session} if failing else set()
        clean = clean or (session if session not in erring else "")
    assert runtime.rollout()["state"] == "killed"
    return erring, clean


def test_the_kill_switchs_tripping_sessions_are_proposed_as_scenarios_on_the_agent_page(
        runtime: Runtime, policy_dir: Path, live_server: LiveServer, users: dict[str, str], page: Any) -> None:
    runtime.setup("canary")
    erring, clean = trip_the_kill_switch(runtime)
    browser_sign_in(page, live_server.url, "alice")
    page.goto(f"{live_server.url}/agents/bot")
    proposed = page.locator("[data-testid=proposed-scenarios] li")
    assert {proposed.nth(i).get_attribute("data-proposed") for i in range(proposed.count())} == erring
    assert clean not in erring and "kill switch" in proposed.first.inner_text()
    assert "no failures are rehearsed" in page.locator("[data-testid=differences]").inner_text()
    screenshot(page, "twin-incident-proposals")

    chosen = sorted(erring)[0]
    page.locator(f"[data-proposed='{chosen}'] a").click()
    page.wait_for_selector("[data-testid=make-scenario]")
    page.fill("[data-testid=scenario-name]", "kill-switch-ticket")
    page.click("[data-testid=make-scenario-button]")
    page.wait_for_selector(".flash-ok")
    assert "Scenario kill-switch-ticket added to" in page.locator(".flash-ok").inner_text()
    written = yaml.safe_load((policy_dir / "hotpath.scenarios.yaml").read_text())
    assert written["scenarios"]["kill-switch-ticket"]["expect"] == ["update_ticket"]
    assert written["recorded"]["kill-switch-ticket"] | {"at": 0} == {
        "session": chosen, "version": "v2", "arm": "candidate", "environment": "live", "at": 0,
        "incident": "kill switch"}
