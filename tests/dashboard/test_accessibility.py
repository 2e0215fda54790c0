"""WCAG 2.1 A and AA on every dashboard page, measured with axe-core in real Chromium (issue 11 §8)."""

from __future__ import annotations

import time
from typing import Any

from flask import Flask

from gatekeeper import rollouts
from tests.support import seed
from tests.support.app import svc
from tests.support.dashboard import LiveServer, axe_violations, browser_sign_in

CARD = "[redacted]"


def _world(app: Flask) -> dict[str, str]:
    """Seed every kind of page content: a canary with history, approvals with arguments, a mirrored pair,
    a metrics outage, a killed rollout, an agent without rollout; return the session ids to visit."""
    services, now = svc(app), time.time()
    support = services.policies.get("support-default").policy
    seed.start(services, "support-bot", policy="support-default", stable="v6", candidate="v7", at=now - 150 * 60)
    seed.canary_history(services, "support-bot", policy=support, now=now)
    live = seed.live_session(services, "support-bot", at=now - 120)
    seed.record_call(services, live, tool="lookup_customer", tool_class="read_only", verdict="allow", at=now - 110,
                     arguments={"customer": "C-1042"}, outcome=("ok", 0.01, 140.0))
    seed.approval_for(services, live, tool="refund_payment", tool_class="irreversible", cost=0.35, at=now - 90,
                      arguments={"amount": 120, "card_number": CARD}, preview="Refund $120.00 to C-1042")
    steady = seed.live_session(services, "support-bot", at=now - 400, arm="stable", status="ok")
    seed.record_call(services, steady, tool="search_kb", tool_class="read_only", verdict="allow", at=now - 390,
                     outcome=("ok", 0.01, 900.0))
    other = seed.live_session(services, "support-bot", at=now - 60)
    seed.approval_for(services, other, tool="update_ticket", tool_class="reversible", cost=0.01, at=now - 50,
                      arguments={"ticket": 88121, "status": "solved"})
    ended = seed.live_session(services, "support-bot", at=now - 900, status="ok")
    seed.approval_for(services, ended, tool="send_email", tool_class="irreversible", cost=0.01, at=now - 880,
                      arguments={"to": "c-1042@example.com"}, state="cancelled")
    seed.start(services, "billing-agent", policy="billing", stable="v3", candidate="v4", at=now - 3600)
    rollouts.act(services, "billing-agent", "promote", actor="user:alice", reason="twin ok", now=now - 1800)
    stable = seed.live_session(services, "billing-agent", at=now - 300, arm="stable", stage="shadow")
    mirror = seed.live_session(services, "billing-agent", at=now - 300, arm="candidate", stage="shadow",
                               mirror_of=stable)
    seed.record_call(services, stable, tool="issue_refund", tool_class="irreversible", verdict="allow", at=now - 200,
                     arguments={"amount": 5}, outcome=("ok", 0.02, 300.0))
    seed.record_call(services, mirror, tool="issue_refund", tool_class="irreversible", verdict="shadow",
                     at=now - 199, arguments={"amount": 5})
    rollouts.act(services, "billing-agent", "kill", actor="kill_switch", reason="error spike", now=now - 100)
    rollouts.register_agent(services, "code-assistant", policy="coding-agent", stable_version="v12", now=now)
    return {"live": live, "mirror": mirror}


def test_every_dashboard_page_has_no_wcag_a_or_aa_violation(
        live_server: LiveServer, users: dict[str, str], page: Any) -> None:
    sessions = _world(live_server.app)
    base = live_server.url
    page.goto(f"{base}/login")
    found = {"sign-in": axe_violations(page)}
    page.fill("input[name=username]", "alice")
    page.fill("input[name=password]", "wrong password")
    page.click("button[type=submit]")
    found["sign-in error"] = axe_violations(page)
    browser_sign_in(page, base, "alice")
    pages = {"overview": "/", "agent at canary": "/agents/support-bot", "agent killed": "/agents/billing-agent",
             "agent without rollout": "/agents/code-assistant", "agent with gate evaluations":
             "/agents/support-bot?events=all", "approvals": "/approvals", "policies": "/policies",
             "session trace": f"/sessions/{sessions['live']}", "mirrored pair": f"/sessions/{sessions['mirror']}",
             "not found": "/agents/nobody", "sign out": "/logout"}
    for name, path in pages.items():
        page.goto(base + path)
        found[name] = axe_violations(page)
    page.goto(f"{base}/agents/support-bot")
    page.click("button[data-action=promote]")
    found["confirmation dialog"] = axe_violations(page)
    bad = {name: v for name, v in found.items() if v}
    assert not bad, "\n".join(f"{name}: {line}" for name, lines in bad.items() for line in lines)
