"""POST /v1/alerts through the real app: actions per severity, once per alert, resolved never promotes."""

from __future__ import annotations

import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from gatekeeper import rollouts
from gatekeeper.services import Services
from gatekeeper.store.models import AlertReceipt, Transition
from tests.support.gates import T0, place, rollout_of, rows

STARTS = "2026-01-01T10:00:00.000Z"


def alert(agent: str | None = "bot", *, status: str = "firing", severity: str | None = None,
          fingerprint: str = "f00d", starts_at: str = STARTS, **labels: str) -> dict[str, Any]:
    tags = {"alertname": "CandidateErrorRateHigh", **labels}
    if agent is not None:
        tags["agent"] = agent
    if severity is not None:
        tags["severity"] = severity
    return {"status": status, "labels": tags, "annotations": {"summary": "errors up"}, "startsAt": starts_at,
            "endsAt": "0001-01-01T00:00:00Z", "generatorURL": "http://prometheus/graph", "fingerprint": fingerprint}


def payload(*alerts: dict[str, Any], status: str = "firing") -> dict[str, Any]:
    return {"receiver": "gatekeeper", "status": status, "alerts": list(alerts), "groupLabels": {},
            "commonLabels": {}, "commonAnnotations": {}, "externalURL": "http://am", "version": "4",
            "groupKey": "{}:{alertname=\"CandidateErrorRateHigh\"}", "truncatedAlerts": 0}


@pytest.fixture
def am(make_token: Callable[..., dict[str, str]]) -> dict[str, str]:
    return make_token("alertmanager", name="am")


def post(client: FlaskClient, headers: dict[str, str], body: dict[str, Any]) -> list[dict[str, Any]]:
    response = client.post("/v1/alerts", json=body, headers=headers)
    assert response.status_code == 200, response.get_json()
    results: list[dict[str, Any]] = response.get_json()["results"]
    return results


def position(services: Services) -> tuple[str, int, str]:
    rollout = rollout_of(services)
    return rollout.stage, rollout.tier, rollout.state


def test_only_alertmanager_may_post_and_only_version_4(client: FlaskClient, am: dict[str, str],
                                                       rm: dict[str, str]) -> None:
    assert client.post("/v1/alerts", json=payload(alert()), headers=rm).status_code == 403
    assert client.post("/v1/alerts", json=payload(alert())).status_code == 401
    bad = client.post("/v1/alerts", json={**payload(alert()), "version": "3"}, headers=am)
    assert bad.status_code == 400 and bad.get_json()["error"]["field"] == "version"


def test_firing_alert_rolls_back_exactly_once(services: Services, client: FlaskClient, am: dict[str, str]) -> None:
    place(services, stage="canary", tier=1)
    before = len(rows(services, Transition))
    first = post(client, am, payload(alert()))
    assert [(r["result"], r["transition"]) for r in first] == [("acted", "rollback")]
    assert position(services) == ("canary", 0, "paused")
    for _ in range(3):  # Alertmanager repeats the notification every repeat_interval
        assert [r["result"] for r in post(client, am, payload(alert()))] == ["duplicate"]
    assert position(services) == ("canary", 0, "paused")
    added = rows(services, Transition)[before:]
    assert [(t.action, t.actor) for t in added] == [("rollback", "alertmanager:am")]
    assert added[0].reason == "alert CandidateErrorRateHigh firing (no severity) [f00d]: errors up"
    assert [(r.fingerprint, r.action) for r in rows(services, AlertReceipt)] == [("f00d", "rollback")]


def test_a_new_firing_of_the_same_alert_acts_again(services: Services, client: FlaskClient,
                                                   am: dict[str, str]) -> None:
    place(services, stage="expansion", tier=1)
    post(client, am, payload(alert()))
    post(client, am, payload(alert(starts_at="2026-01-01T11:00:00.000Z")))
    assert position(services) == ("canary", 1, "paused")


def test_concurrent_deliveries_act_once(app: Flask, services: Services, am: dict[str, str]) -> None:
    place(services, stage="canary", tier=1)

    def deliver(_: int) -> list[str]:
        return [r["result"] for r in post(app.test_client(), am, payload(alert()))]

    with ThreadPoolExecutor(max_workers=6) as pool:
        results = [r for batch in pool.map(deliver, range(6)) for r in batch]
    assert sorted(results) == ["acted"] + ["duplicate"] * 5
    assert position(services) == ("canary", 0, "paused")


def test_severity_picks_the_policy_action(services: Services, client: FlaskClient, am: dict[str, str]) -> None:
    place(services, stage="expansion", tier=0)
    result = post(client, am, payload(alert(severity="CRITICAL")))
    assert [r["transition"] for r in result] == ["kill"]
    assert position(services) == ("shadow", 0, "killed")


def test_hold_lasts_until_the_alert_resolves_and_resolved_never_promotes(
        services: Services, client: FlaskClient, am: dict[str, str]) -> None:
    place(services, stage="canary", tier=0)
    assert [r["transition"] for r in post(client, am, payload(alert(severity="warning")))] == ["hold"]
    assert position(services) == ("canary", 0, "held")
    other = post(client, am, payload(alert(severity="warning", fingerprint="beef", status="resolved")))
    assert [(r["result"], r["transition"]) for r in other] == [("resolved", None)]  # not the alert that held it
    assert position(services) == ("canary", 0, "held")
    resolved = post(client, am, payload(alert(severity="warning", status="resolved")))
    assert [(r["result"], r["transition"]) for r in resolved] == [("resolved", "release")]
    assert position(services) == ("canary", 0, "progressing")
    again = post(client, am, payload(alert(severity="warning", status="resolved")))
    assert [r["transition"] for r in again] == [None]
    assert position(services) == ("canary", 0, "progressing")


def test_alerts_that_do_not_concern_a_rollout_are_acknowledged(services: Services, client: FlaskClient,
                                                               am: dict[str, str]) -> None:
    place(services, stage="canary", tier=1)
    results = post(client, am, payload(alert("ghost", fingerprint="a1"), alert(None, fingerprint="a2"),
                                       alert(fingerprint="a3", version="v1"),
                                       alert(fingerprint="a4", status="resolved")))
    assert [r["result"] for r in results] == ["unknown_agent", "ignored", "other_version", "resolved"]
    assert [r["result"] for r in post(client, am, payload(alert("ghost", fingerprint="a1")))] == ["duplicate"]
    assert position(services) == ("canary", 1, "progressing")
    assert {r.action for r in rows(services, AlertReceipt)} == {"unknown_agent", "other_version"}


def test_an_alert_that_cannot_act_is_refused_not_failed(services: Services, client: FlaskClient,
                                                        am: dict[str, str]) -> None:
    place(services, stage="twin")
    results = post(client, am, payload(alert()))
    assert results[0]["result"] == "refused" and "first tier" in results[0]["detail"]
    assert position(services) == ("twin", 0, "progressing")


def test_an_alert_hold_on_a_rollout_the_gate_holds_is_a_transition_and_so_is_its_release(
        services: Services, client: FlaskClient, am: dict[str, str], viewer: dict[str, str]) -> None:
    place(services, stage="canary", tier=0)
    rollouts.act(services, "bot", "hold", actor="scheduler", reason="tier gate: too few sessions: 1 < 3", now=T0)
    before = len(rows(services, Transition))
    held = post(client, am, payload(alert(severity="warning")))
    assert [(r["result"], r["transition"]) for r in held] == [("acted", "hold")]
    resolved = post(client, am, payload(alert(severity="warning", status="resolved")))
    assert [(r["result"], r["transition"]) for r in resolved] == [("resolved", "release")]
    added = rows(services, Transition)[before:]
    assert [(t.action, t.actor, t.from_state, t.to_state) for t in added] == [
        ("hold", "alertmanager:am", "held", "held"), ("release", "alertmanager:am", "held", "progressing")]
    assert added[0].reason.startswith("alert CandidateErrorRateHigh firing (warning) [f00d]")
    assert json.loads(added[0].metrics)["alert"]["labels"]["severity"] == "warning"
    history = client.get("/v1/agents/bot/history?kind=transition", headers=viewer).get_json()["items"]
    assert [e["action"] for e in history[:3]] == ["release", "hold", "hold"]
    assert position(services) == ("canary", 0, "progressing")


def test_who_holds_the_rollout_is_a_column_set_by_the_gate_and_the_alert(
        services: Services, client: FlaskClient, am: dict[str, str]) -> None:
    place(services, stage="canary", tier=0)
    rollouts.act(services, "bot", "hold", actor="scheduler", reason="tier gate: too few sessions: 1 < 3", now=T0)
    assert (rollout_of(services).held_by, rollout_of(services).held_by_alert) == ("gate", None)
    post(client, am, payload(alert(severity="warning")))
    assert (rollout_of(services).held_by, rollout_of(services).held_by_alert) == ("alert", "f00d")
    post(client, am, payload(alert(severity="warning", status="resolved")))
    assert (rollout_of(services).held_by, rollout_of(services).held_by_alert) == (None, None)
