"""Tokens through the API and the CLI: listed without secrets, created once, revoked for every worker at once."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
import requests
from flask.testing import FlaskClient

from gatekeeper import create_app
from gatekeeper.store.tokens import create_token
from tests.support.app import POLICIES
from tests.support.processes import Deployment
from tests.support.services import PostgresServer


def test_create_list_and_revoke_through_the_api(client: FlaskClient, rm: dict[str, str],
                                                viewer: dict[str, str]) -> None:
    created = client.post("/v1/tokens", json={"name": "bot-runtime", "role": "agent", "agent": "support-bot"},
                          headers=rm)
    assert created.status_code == 201, created.json
    secret, token_id = created.json["token"], created.json["id"]
    assert secret.startswith("gk_") and created.json["role"] == "agent" and created.json["agent"] == "support-bot"

    listed = client.get("/v1/tokens", headers=rm)
    assert listed.status_code == 200
    assert [t["name"] for t in listed.json] == ["alice", "victor", "bot-runtime"]
    assert all(set(t) == {"id", "name", "role", "agent", "created_at", "revoked_at"} for t in listed.json)
    assert secret not in listed.text and "hash" not in listed.text

    agent = {"Authorization": f"Bearer {secret}"}
    assert client.get(f"/v1/approvals/{'0' * 24}", headers=agent).status_code == 404  # authenticated, then not found
    revoked = client.post(f"/v1/tokens/{token_id}/revoke", headers=rm)
    assert revoked.status_code == 200 and revoked.json["revoked_at"] is not None
    refused = client.get(f"/v1/approvals/{'0' * 24}", headers=agent)
    assert refused.status_code == 401 and refused.json["error"]["message"] == "unknown or revoked token"

    assert client.post(f"/v1/tokens/{token_id}/revoke", headers=rm).status_code == 409
    assert client.post("/v1/tokens/999/revoke", headers=rm).status_code == 404
    assert client.post(f"/v1/tokens/{2**64}/revoke", headers=rm).status_code == 404
    assert [t["name"] for t in client.get("/v1/tokens?state=revoked", headers=rm).json] == ["bot-runtime"]
    assert [t["name"] for t in client.get("/v1/tokens?state=active", headers=rm).json] == ["alice", "victor"]


def test_only_release_managers_manage_tokens(client: FlaskClient, viewer: dict[str, str]) -> None:
    assert client.get("/v1/tokens", headers=viewer).status_code == 403
    assert client.post("/v1/tokens", json={"name": "x", "role": "viewer"}, headers=viewer).status_code == 403
    assert client.post("/v1/tokens/1/revoke", headers=viewer).status_code == 403


def test_bad_token_requests_are_refused(client: FlaskClient, rm: dict[str, str]) -> None:
    for body, field in [({"name": "x", "role": "root"}, "role"), ({"name": "x", "role": "agent"}, "agent"),
                        ({"name": "x", "role": "viewer", "agent": "bot"}, "agent"),
                        ({"name": "", "role": "viewer"}, "name"), ({"name": "x", "role": "viewer", "z": 1}, "z")]:
        answer = client.post("/v1/tokens", json=body, headers=rm)
        assert answer.status_code == 400 and answer.json["error"]["field"] == field, (body, answer.json)


def hammer(url: str, token: str, count: int) -> Counter[int]:
    """Send `count` reads from 8 threads at once, so that every worker serves some; count the statuses."""
    statuses: Counter[int] = Counter()
    lock = threading.Lock()

    def read(n: int) -> None:
        for _ in range(n):
            status = requests.get(f"{url}/v1/agents", headers={"Authorization": f"Bearer {token}"}, timeout=10)
            with lock:
                statuses[status.status_code] += 1

    threads = [threading.Thread(target=read, args=(count // 8,)) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return statuses


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh database of each kind: the revocation mark is read on a raw connection of either driver."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'gatekeeper.db'}"
    postgres: PostgresServer = request.getfixturevalue("postgres")
    return postgres.create_database("tokens")


def test_a_revoked_token_is_refused_by_every_worker_on_the_next_request(tmp_path: Path, database_url: str) -> None:
    with Deployment(tmp_path, policy_dir=POLICIES, database_url=database_url) as deployment:
        # The first token comes from the database; the rest go through the API with it.
        rm = deployment.cli("token", "create", "--role", "release_manager", "--name", "root",
                            "--db", deployment.database_url).stdout.strip()
        deployment.serve(workers=2)
        viewer = deployment.cli("token", "create", "--role", "viewer", "--name", "grafana", "--json",
                                token=rm).stdout
        created = json.loads(viewer)
        assert hammer(deployment.url, created["token"], 80) == Counter({200: 80})  # cached in both workers now

        listed = deployment.cli("token", "list", token=rm).stdout
        assert "grafana" in listed and created["token"] not in listed
        done = deployment.cli("token", "revoke", str(created["id"]), token=rm)
        assert done.stdout.strip() == f"revoked token {created['id']} (grafana, viewer)"
        assert hammer(deployment.url, created["token"], 80) == Counter({401: 80})
        assert hammer(deployment.url, rm, 16) == Counter({200: 16})  # the others still work

        listed_json = json.loads(deployment.cli("token", "list", "--json", "--state", "revoked", token=rm).stdout)
        assert [t["name"] for t in listed_json] == ["grafana"]
        again = deployment.cli("token", "revoke", str(created["id"]), token=rm, check=False)
        assert again.returncode == 1
        assert again.stderr.strip().splitlines() == [f"gatekeeper: 409 conflict: token {created['id']} (grafana) "
                                                     "is already revoked (field token_id)"]


def test_tokens_are_listed_and_revoked_in_the_database_without_a_server(tmp_path: Path) -> None:
    with Deployment(tmp_path, policy_dir=POLICIES) as deployment:
        database = ("--db", deployment.database_url)
        deployment.cli("token", "create", "--role", "viewer", "--name", "first", *database)
        made = json.loads(deployment.cli("token", "create", "--role", "agent", "--agent", "bot", "--name", "bot",
                                         "--json", *database).stdout)
        assert made["token"].startswith("gk_") and made["agent"] == "bot"
        listed = deployment.cli("token", "list", *database).stdout.splitlines()
        assert listed[0].split() == ["ID", "NAME", "ROLE", "AGENT", "CREATED", "REVOKED"]
        assert [line.split()[1] for line in listed[2:]] == ["first", "bot"]
        assert deployment.cli("token", "revoke", str(made["id"]), *database).returncode == 0
        revoked = json.loads(deployment.cli("token", "list", "--state", "revoked", "--json", *database).stdout)
        assert [t["name"] for t in revoked] == ["bot"] and "token" not in revoked[0]


def test_the_revocation_mark_reconnects_unseen_after_postgres_drops_its_connection(postgres: PostgresServer) -> None:
    url = postgres.create_database("mark")
    app = create_app({"database_url": url, "policy_dir": POLICIES})
    services = app.extensions["gatekeeper"]
    services.db.upgrade()
    try:
        with services.db.transaction() as db:
            token, _ = create_token("victor", role="viewer", agent=None, now=time.time(), db=db)
        client, headers = app.test_client(), {"Authorization": f"Bearer {token}"}
        assert client.get("/v1/agents", headers=headers).status_code == 200  # the mark's connection is open
        with services.db.engine.begin() as connection:  # what a Postgres restart or failover does to it
            connection.exec_driver_sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                                       " WHERE datname = current_database() AND pid <> pg_backend_pid()")
        assert client.get("/v1/agents", headers=headers).status_code == 200
    finally:
        services.db.dispose()
