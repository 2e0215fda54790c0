"""The release-manager API: a rollout from twin to completed and back, errors, durability."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import text

from gatekeeper import create_app
from tests.support.app import svc

LADDER = ["twin", "shadow", "canary 1%", "canary 5%", "expansion 10%", "expansion 25%", "expansion 50%",
          "expansion 100%"]


# These run again on a real Postgres: same API, same audit trail, same durability.
ON_BOTH = pytest.mark.parametrize("db_url", ["sqlite", "postgres"], indirect=True)


def register(client: FlaskClient, rm: dict[str, str], *, version: str | None = "v1") -> None:
    response = client.post("/v1/agents", json={"name": "support-bot", "policy": "support-default",
                                               "stable_version": version}, headers=rm)
    assert response.status_code == 201, response.json


def start(client: FlaskClient, rm: dict[str, str], version: str = "v2") -> dict[str, Any]:
    response = client.post("/v1/agents/support-bot/rollouts", json={"version": version, "reason": "new build"},
                           headers=rm)
    assert response.status_code == 201, response.json
    return response.json


def post(client: FlaskClient, rm: dict[str, str], action: str, **body: Any) -> dict[str, Any]:
    response = client.post(f"/v1/agents/support-bot/{action}", json={"reason": f"{action} it", **body}, headers=rm)
    assert response.status_code == 200, response.json
    return response.json


@ON_BOTH
def test_twin_to_completed_and_back_through_a_rollback(client: FlaskClient, rm: dict[str, str]) -> None:
    register(client, rm)
    started = start(client, rm)
    assert started["status"]["ladder"] == LADDER
    labels = [started["status"]["rollout"]["tier_label"]]
    for _ in range(4):
        labels.append(post(client, rm, "promote")["status"]["rollout"]["tier_label"])
    assert labels == LADDER[:5]
    back = post(client, rm, "rollback", to_stage="canary")["status"]
    assert (back["rollout"]["tier_label"], back["rollout"]["state"]) == ("canary 1%", "paused")
    assert post(client, rm, "resume")["status"]["rollout"]["state"] == "progressing"
    done = post(client, rm, "promote", full=True)["status"]
    assert done["rollout"]["state"] == "completed"
    assert done["stable_version"] == "v2"
    assert done["allowed_actions"] == []

    page = client.get("/v1/agents/support-bot/history?limit=100", headers=rm).json
    actions = [e["action"] for e in reversed(page["items"])]
    assert actions == ["start", "promote", "promote", "promote", "promote", "rollback", "resume", "promote_full"]
    revision = hashlib.sha256(Path("policies/support-default.yaml").read_bytes()).hexdigest()[:12]
    for entry in page["items"]:
        assert entry["actor"] == "release_manager:alice"
        assert entry["reason"]
        assert entry["to"]["stage"] and entry["to"]["tier"] is not None
        assert entry["policy_revision"] == revision
    rollback = page["items"][2]
    assert (rollback["from"]["stage"], rollback["from"]["tier"]) == ("expansion", 0)
    assert (rollback["to"]["stage"], rollback["to"]["tier"]) == ("canary", 0)


@ON_BOTH
def test_history_is_paginated_newest_first(client: FlaskClient, rm: dict[str, str]) -> None:
    register(client, rm)
    start(client, rm)
    for _ in range(3):
        post(client, rm, "promote")
    first = client.get("/v1/agents/support-bot/history?limit=2", headers=rm).json
    second = client.get("/v1/agents/support-bot/history?limit=2&offset=2", headers=rm).json
    assert first["total"] == second["total"] == 4
    assert [e["to"]["stage"] for e in first["items"] + second["items"]] == ["canary", "canary", "shadow", "twin"]


@ON_BOTH
def test_a_new_app_on_the_same_file_sees_the_same_rollouts(app_overrides: dict[str, Any], app: Flask,
                                                          client: FlaskClient, rm: dict[str, str]) -> None:
    register(client, rm)
    start(client, rm)
    post(client, rm, "promote")
    before = client.get("/v1/agents/support-bot/history", headers=rm).json
    status = client.get("/v1/agents/support-bot", headers=rm).json
    svc(app).db.dispose()

    reopened = create_app(app_overrides)
    again = reopened.test_client()
    assert again.get("/v1/agents/support-bot/history", headers=rm).json == before
    assert again.get("/v1/agents/support-bot", headers=rm).json == status
    svc(reopened).db.dispose()


def snapshot(app: Flask) -> dict[str, list[Any]]:
    """Every row of every table, to show a refused request changed nothing."""
    database = svc(app).db
    with database.reading() as db:
        return {t: [tuple(r) for r in db.exec(text(f"SELECT * FROM {t}"))]  # type: ignore[call-overload]
                for t in database.table_names()}


@ON_BOTH
@pytest.mark.parametrize(("method", "path", "body", "headers", "status", "field"), [
    ("POST", "/v1/agents/support-bot/promote", {"reason": "x"}, None, 401, None),
    ("POST", "/v1/agents/support-bot/promote", {"reason": "x"}, "bogus", 401, None),
    ("POST", "/v1/agents/support-bot/promote", {"reason": "x"}, "viewer", 403, None),
    ("POST", "/v1/agents/support-bot/promote", {"reason": "x"}, "agent", 403, None),
    ("POST", "/v1/agents/support-bot/promote", {"reason": 5}, "rm", 400, "reason"),
    ("POST", "/v1/agents/support-bot/promote", {"reason": "x", "fast": True}, "rm", 400, "fast"),
    ("POST", "/v1/agents/support-bot/promote", {}, "rm", 400, "reason"),
    ("POST", "/v1/agents/support-bot/rollback", {"reason": "x", "to_stage": "prod"}, "rm", 400, "to_stage"),
    ("POST", "/v1/agents/support-bot/promote", "not json", "rm", 400, None),
    ("POST", "/v1/agents/support-bot/promote", {"reason": "x" * 70000}, "rm", 413, None),
    ("POST", "/v1/agents", {"name": "Bad Name", "policy": "support-default"}, "rm", 400, "name"),
    ("POST", "/v1/agents", {"name": "other-bot", "policy": "no-such-policy"}, "rm", 404, "policy"),
    ("POST", "/v1/agents", {"name": "support-bot", "policy": "support-default"}, "rm", 409, "name"),
    ("POST", "/v1/agents/ghost/promote", {"reason": "x"}, "rm", 404, None),
    ("GET", "/v1/agents/ghost", None, "viewer", 404, None),
    ("POST", "/v1/agents/support-bot/resume", {"reason": "x"}, "rm", 409, "action"),
    ("POST", "/v1/agents/support-bot/rollback", {"reason": "x", "to_stage": "expansion"}, "rm", 409, "to_stage"),
    ("POST", "/v1/agents/support-bot/rollouts", {"version": "v3"}, "rm", 409, "version"),
    ("GET", "/v1/agents/support-bot/history?limit=0", None, "viewer", 400, "limit"),
])
def test_refused_requests_change_nothing(app: Flask, client: FlaskClient, rm: dict[str, str],
                                         viewer: dict[str, str], make_token: Any, method: str, path: str,
                                         body: Any, headers: str | None, status: int, field: str | None) -> None:
    register(client, rm)
    start(client, rm)
    post(client, rm, "promote")
    chosen = {"rm": rm, "viewer": viewer, "agent": make_token("agent", agent="support-bot"),
              "bogus": {"Authorization": "Bearer gk_nope"}, None: {}}[headers]
    before = snapshot(app)
    kwargs: dict[str, Any] = {"data": body, "content_type": "application/json"} if isinstance(body, str) \
        else {"json": body}
    response = client.open(path, method=method, headers=chosen, **kwargs)
    assert response.status_code == status, response.json
    error = response.json["error"]
    assert error["code"] and error["message"]
    if field is not None:
        assert error["field"] == field
    assert snapshot(app) == before


def test_viewer_reads(client: FlaskClient, rm: dict[str, str], viewer: dict[str, str]) -> None:
    register(client, rm)
    start(client, rm)
    listed = client.get("/v1/agents", headers=viewer)
    assert listed.status_code == 200
    assert [a["name"] for a in listed.json] == ["support-bot"]
    assert listed.json[0]["rollout"]["candidate_version"] == "v2"
    assert "promote" in listed.json[0]["allowed_actions"]


@ON_BOTH
def test_kill_reverts_and_resume_continues(client: FlaskClient, rm: dict[str, str]) -> None:
    register(client, rm)
    start(client, rm)
    for _ in range(3):
        post(client, rm, "promote")
    killed = post(client, rm, "kill")["status"]["rollout"]
    assert (killed["stage"], killed["state"], killed["kill_switch_open"]) == ("shadow", "killed", True)
    resumed = post(client, rm, "resume")["status"]["rollout"]
    assert (resumed["state"], resumed["kill_switch_open"]) == ("progressing", False)
    aborted = post(client, rm, "abort")["status"]
    assert aborted["rollout"]["state"] == "aborted"
    assert aborted["stable_version"] == "v1"


def test_health_and_openapi(client: FlaskClient) -> None:
    assert client.get("/healthz").json == {"status": "ok", "checks": {}}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json["checks"]["database"] == "ok"
    spec = client.get("/openapi.json").json
    promote = spec["paths"]["/v1/agents/{agent}/promote"]["post"]
    schema_name = promote["requestBody"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
    assert set(spec["components"]["schemas"][schema_name]["properties"]) == {"reason", "full"}
    assert "200" in promote["responses"]


def test_readyz_fails_without_schema(tmp_path: Path) -> None:
    app = create_app({"database_url": f"sqlite:///{tmp_path / 'empty.db'}", "policy_dir": Path("policies")})
    response = app.test_client().get("/readyz")
    assert response.status_code == 503
    assert response.json["checks"]["database"] == "unavailable"
