"""One truth in every view (issue 11 §5): superseded reports, tier names, versions in the history,
and thin evidence shown as progress, through the real app's API and pages."""

from __future__ import annotations

import time
from collections.abc import Callable

from click.testing import CliRunner
from flask import Flask
from flask.testing import FlaskClient

from gatekeeper import rollouts
from gatekeeper.cli import main
from gatekeeper.core.tier_gate import TierSignals
from tests.support import seed
from tests.support.app import svc
from tests.support.dashboard import signed_in


def _at_canary(app: Flask, *, now: float) -> None:
    services = svc(app)
    seed.start(services, "support-bot", policy="support-default", stable="v6", candidate="v7", at=now - 150 * 60)
    seed.canary_history(services, "support-bot", policy=services.policies.get("support-default").policy, now=now)


def test_a_report_superseded_by_a_promotion_is_no_longer_the_current_one(
        app: Flask, client: FlaskClient, make_token: Callable[..., dict[str, str]], users: dict[str, str]) -> None:
    now = time.time()
    _at_canary(app, now=now)
    rm = make_token("release_manager")
    before = client.get("/v1/agents/support-bot", headers=rm).get_json()
    assert before["gate_report"]["tier_label"] == "canary 5%"
    client.post("/v1/agents/support-bot/promote", json={"reason": "looks fine"}, headers=rm)
    after = client.get("/v1/agents/support-bot", headers=rm).get_json()
    assert after["rollout"]["tier_label"] == "expansion 10%" and after["gate_report"] is None
    signed_in(client, "alice")
    page = client.get("/agents/support-bot").get_data(as_text=True)
    assert 'data-testid="superseded"' in page and "superseded by <strong>promote</strong> to expansion 10%" in page
    assert 'data-check="' not in page


def test_tiers_are_named_alike_and_history_carries_the_candidate(
        app: Flask, client: FlaskClient, make_token: Callable[..., dict[str, str]], users: dict[str, str]) -> None:
    now = time.time()
    _at_canary(app, now=now)
    rm = make_token("release_manager")
    moved = client.post("/v1/agents/support-bot/promote", json={"reason": "up"}, headers=rm).get_json()
    assert (moved["transition"]["from"]["label"], moved["transition"]["to"]["label"]) == ("canary 5%", "expansion 10%")
    assert moved["status"]["rollout"]["tier_label"] == "expansion 10%"
    items = client.get("/v1/agents/support-bot/history?kind=transition", headers=rm).get_json()["items"]
    assert {i["candidate_version"] for i in items} == {"v7"}
    assert [i["to"]["label"] for i in items] == ["expansion 10%", "canary 5%", "canary 1%", "shadow", "twin"]
    signed_in(client, "alice")
    page = client.get("/agents/support-bot").get_data(as_text=True)
    assert "canary 5% → expansion 10%" in page and 'class="badge version"' in page and "tier 0" not in page


def test_history_of_two_rollouts_names_each_ones_candidate(
        app: Flask, client: FlaskClient, users: dict[str, str]) -> None:
    now = time.time()
    services = svc(app)
    seed.start(services, "support-bot", policy="support-default", stable="v6", candidate="v7", at=now - 600)
    rollouts.act(services, "support-bot", "abort", actor="user:alice", reason="wrong build", now=now - 500)
    rollouts.start_rollout(services, "support-bot", version="v8", actor="user:alice", reason="the right one",
                           now=now - 400)
    signed_in(client, "alice")
    page = client.get("/agents/support-bot").get_data(as_text=True)
    history = page.split('data-testid="history"')[1]
    assert history.index(">v8<") < history.index(">v7<")


def test_collecting_evidence_is_neutral_progress_not_failure(
        app: Flask, client: FlaskClient, users: dict[str, str]) -> None:
    now = time.time()
    services = svc(app)
    policy = services.policies.get("support-default").policy
    seed.start(services, "support-bot", policy="support-default", stable="v6", candidate="v7", at=now - 3600)
    for _ in range(2):
        rollouts.act(services, "support-bot", "promote", actor="user:alice", reason="up", now=now - 1800)
    thin = TierSignals(sessions=3, tool_calls=20, errors=2, p95_latency_s=0.4, spend_dollars=0.3)
    report = seed.tier_report(policy, stage="canary", tier=0, at=now - 10, tier_started_at=now - 1800, signals=thin)
    assert report["result"] == "hold" and report["reasons"][0].startswith("too few sessions")
    seed.store_report(services, "support-bot", report=report)
    rollouts.act(services, "support-bot", "hold", actor="scheduler", reason="; ".join(report["reasons"]),
                 now=now - 10)
    signed_in(client, "victor")
    page = client.get("/agents/support-bot").get_data(as_text=True)
    assert "collecting evidence" in page and "✗ fail" not in page
    assert "… collecting" in page and "… not yet counted" in page  # a rate over 3 sessions is not a verdict
    assert 'class="badge state-held"' not in page and "state-collecting" in page
    overview = client.get("/").get_data(as_text=True)
    assert "state-collecting" in overview and "figure result-fail" not in overview


def test_status_after_a_promotion_shows_no_previous_stage_hold_and_no_candidate_once_completed(
        app: Flask, live_url: str, make_token: Callable[..., dict[str, str]]) -> None:
    now = time.time()
    services = svc(app)
    seed.start(services, "support-bot", policy="support-default", stable="v6", candidate="v7", at=now - 600)
    seed.store_report(services, "support-bot", report={
        "stage": "twin", "tier": 0, "tier_label": "twin", "result": "hold", "evaluated_at": now - 60,
        "reasons": ["too few runs: 3 < 50"], "checks": []})
    token = make_token("release_manager")["Authorization"].split()[1]

    def status() -> list[str]:
        result = CliRunner().invoke(main, ["status", "--url", live_url, "--token", token])
        assert result.exit_code == 0, result.output
        return next(line for line in result.output.splitlines() if line.startswith("support-bot")).split()

    assert status()[:6] == ["support-bot", "v6", "v7", "twin", "progressing", "hold"]
    rollouts.act(services, "support-bot", "promote", actor="user:alice", reason="runs look fine", now=now - 30)
    assert status()[:6] == ["support-bot", "v6", "v7", "shadow", "progressing", "-"]
    rollouts.act(services, "support-bot", "promote_full", actor="user:alice", reason="ship it", now=now - 20)
    assert status()[:6] == ["support-bot", "v7", "-", "expansion", "100%", "completed"]
