"""`POST /v1/agents/{agent}/stable`: sets the stable version only while no rollout is in progress, audited."""

from __future__ import annotations

from flask import Flask
from flask.testing import FlaskClient
from sqlmodel import select

from gatekeeper.store.models import Agent, StableChange, Version
from tests.support.app import svc


def test_set_stable_bootstraps_an_agent_registered_without_one(app: Flask, client: FlaskClient,
                                                                rm: dict[str, str]) -> None:
    assert client.post("/v1/agents", json={"name": "support-bot", "policy": "support-default"},
                       headers=rm).status_code == 201
    answer = client.post("/v1/agents/support-bot/stable", json={"version": "v1", "reason": "live since May"},
                         headers=rm)
    assert answer.status_code == 200, answer.json
    assert {k: answer.json[k] for k in ("agent", "from_version", "to_version", "actor", "reason")} == {
        "agent": "support-bot", "from_version": None, "to_version": "v1", "actor": "release_manager:alice",
        "reason": "live since May"}
    assert answer.json["status"]["stable_version"] == "v1"
    again = client.post("/v1/agents/support-bot/stable", json={"version": "v1.1", "reason": "hotfix"}, headers=rm)
    assert again.json["from_version"] == "v1"
    with svc(app).db.reading() as db:
        changes = [(c.from_version, c.to_version, c.actor, c.reason) for c in db.exec(select(StableChange))]
        labels = {v.label for v in db.exec(select(Version))}
    assert changes == [(None, "v1", "release_manager:alice", "live since May"),
                       ("v1", "v1.1", "release_manager:alice", "hotfix")]
    assert labels == {"v1", "v1.1"}


def test_set_stable_is_refused_during_a_rollout_and_changes_nothing(app: Flask, client: FlaskClient,
                                                                    rm: dict[str, str],
                                                                    viewer: dict[str, str]) -> None:
    client.post("/v1/agents", json={"name": "support-bot", "policy": "support-default", "stable_version": "v1"},
                headers=rm)
    client.post("/v1/agents/support-bot/rollouts", json={"version": "v2"}, headers=rm)
    refused = client.post("/v1/agents/support-bot/stable", json={"version": "v3", "reason": "x"}, headers=rm)
    assert refused.status_code == 409 and refused.json["error"]["field"] == "version"
    for body, status, field in [({"version": "v3"}, 400, "reason"), ({"version": "v 3", "reason": "x"}, 400, "version"),
                                ({"version": "v3", "reason": ""}, 400, "reason"),
                                ({"version": "v3", "reason": "x", "extra": 1}, 400, "extra")]:
        answer = client.post("/v1/agents/support-bot/stable", json=body, headers=rm)
        assert (answer.status_code, answer.json["error"].get("field")) == (status, field), body
    assert client.post("/v1/agents/ghost/stable", json={"version": "v3", "reason": "x"}, headers=rm).status_code == 404
    assert client.post("/v1/agents/support-bot/stable", json={"version": "v3", "reason": "x"},
                       headers=viewer).status_code == 403
    with svc(app).db.reading() as db:
        assert db.exec(select(Agent)).one().stable_version == "v1"
        assert db.exec(select(StableChange)).all() == []
