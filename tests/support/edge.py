"""A real `gatekeeper serve` (2 workers) on SQLite or Postgres, seeded with one of everything.

The server is gunicorn (or GATEKEEPER_TEST_SERVER); the parameter "granian" serves SQLite under granian.

`target` holds the server's URL and port, a token of every role (and one revoked token), the ids of a
live agent, rollout, session, decision, approval and of the revoked token, a signed-in dashboard
session, and `snapshot()`: every row of every table, to prove that refused requests change nothing.
"""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
import sqlalchemy
from sqlalchemy.pool import NullPool
from sqlmodel import SQLModel

from gatekeeper.store.db import Database
from gatekeeper.store.tokens import create_token, create_user
from tests.support.app import POLICIES
from tests.support.runtime import serve
from tests.support.servers import TEST_SERVER, Server
from tests.support.services import PostgresServer

AGENT = "support-bot"
PASSWORD = "edge-password-1"
# Requests granian's HTTP parser (hyper) refuses before the app is called, with this status and an
# empty body (no hook lets the app write the JSON error body); gunicorn's workers write it (the 413
# becomes a 400: hyper cannot read a Content-Length past 2**64 at all).
GRANIAN_REFUSES = {"101 headers": 431, "NUL in a header value": 400, "NUL in a header name": 400,
                   "NUL in the method": 400, "negative Content-Length": 400, "non-numeric Content-Length": 400,
                   "superscript Content-Length": 400, "huge Content-Length": 400, "gzip transfer coding": 400,
                   "control byte in a header": 400}
GRANIAN_REFUSES_PREFIX = "raw NUL in "  # a NUL byte in the request line: 400


def refused_by_granian(name: str) -> int | None:
    """Return the status granian itself answers the battery's case `name` with (empty body), or None."""
    return 400 if name.startswith(GRANIAN_REFUSES_PREFIX) else GRANIAN_REFUSES.get(name)


@dataclass
class Target:
    """A served Gatekeeper with seeded data, as the hostile-input tests see it."""

    url: str
    database_url: str
    server: str = "gunicorn"
    tokens: dict[str, str] = field(default_factory=dict)
    ids: dict[str, str] = field(default_factory=dict)
    cookie: str = ""
    csrf: str = ""

    @property
    def port(self) -> int:
        """The server's loopback port."""
        return int(self.url.rsplit(":", 1)[1])

    def auth(self, role: str) -> dict[str, str]:
        """Return the Authorization header of a role's token."""
        return {"Authorization": f"Bearer {self.tokens[role]}"}

    def snapshot(self) -> dict[str, list[tuple[Any, ...]]]:
        """Return every row of every table, in a stable order."""
        engine = sqlalchemy.create_engine(self.database_url, poolclass=NullPool)
        try:
            with engine.connect() as connection:
                return {table.name: sorted((tuple(row) for row in connection.execute(table.select())), key=repr)
                        for table in SQLModel.metadata.sorted_tables}
        finally:
            engine.dispose()


def seed(target: Target) -> None:
    """Create tokens and a user; register an agent; start a rollout, session, decision, approval; revoke a token."""
    database = Database(target.database_url)
    try:
        with database.transaction() as db:
            for role in ("release_manager", "viewer", "alertmanager"):
                target.tokens[role] = create_token(f"edge-{role}", role=role, agent=None, now=time.time(), db=db)[0]
            target.tokens["agent"] = create_token("edge-agent", role="agent", agent=AGENT,
                                                  now=time.time(), db=db)[0]
            create_user("edge-rm", password=PASSWORD, role="release_manager", now=time.time(), db=db)
    finally:
        database.dispose()
    rm, agent = target.auth("release_manager"), target.auth("agent")
    _ok(requests.post(f"{target.url}/v1/agents", json={"name": AGENT, "policy": "support-default",
                                                       "stable_version": "v1"}, headers=rm, timeout=10))
    _ok(requests.post(f"{target.url}/v1/agents/{AGENT}/rollouts", json={"version": "v2"}, headers=rm, timeout=10))
    twin = _ok(requests.post(f"{target.url}/v1/sessions", headers=agent, timeout=10,
                             json={"agent": AGENT, "environment": "twin", "scenario": "refund-request"}))
    target.ids["session"] = twin["session_id"]
    allowed = _ok(requests.post(f"{target.url}/v1/decisions", json={"session_id": twin["session_id"],
                                                                    "tool": "search_kb", "cost": 0.01},
                                headers=agent, timeout=10))
    target.ids["decision"] = allowed["decision_id"]
    asked = _ok(requests.post(f"{target.url}/v1/decisions", json={"session_id": twin["session_id"],
                                                                  "tool": "send_email", "cost": 0.01},
                              headers=agent, timeout=10))
    assert asked["verdict"] == "approval_required", asked
    target.ids["approval"] = asked["approval_id"]
    made = _ok(requests.post(f"{target.url}/v1/tokens", json={"name": "edge-revoked", "role": "viewer"}, headers=rm,
                             timeout=10))
    _ok(requests.post(f"{target.url}/v1/tokens/{made['id']}/revoke", headers=rm, timeout=10))
    target.tokens["revoked"], target.ids["token"] = made["token"], str(made["id"])
    _sign_in(target)


def _sign_in(target: Target) -> None:
    browser = requests.Session()
    page = browser.get(f"{target.url}/login", timeout=10).text
    csrf = re.search(r'name="csrf-token" content="([^"]+)"', page)
    answer = browser.post(f"{target.url}/login", data={"username": "edge-rm", "password": PASSWORD,
                                                       "csrf_token": csrf.group(1) if csrf else ""},
                          timeout=10, allow_redirects=False)
    assert answer.status_code == 303, answer.text[:300]
    home = browser.get(f"{target.url}/", timeout=10).text
    found = re.search(r'name="csrf-token" content="([^"]+)"', home)
    assert found, "the dashboard carries no CSRF token"
    target.csrf = found.group(1)
    target.cookie = "; ".join(f"{k}={v}" for k, v in browser.cookies.items())


def _ok(response: requests.Response) -> Any:
    assert response.status_code in (200, 201), (response.status_code, response.text[:300])
    return response.json()


@pytest.fixture(params=["sqlite", "postgres"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Target]:
    """A seeded `gatekeeper serve` with 2 workers, on SQLite and then on Postgres (or "granian": SQLite under it)."""
    server_name = "granian" if request.param == "granian" else TEST_SERVER
    if request.param == "postgres":
        postgres: PostgresServer = request.getfixturevalue("postgres")
        database_url = postgres.create_database("gk_edge")
    else:
        database_url = f"sqlite:///{tmp_path / 'edge.db'}"
    policies = tmp_path / "policies"  # a copy: POST /v1/sessions/{id}/scenario writes beside the policy
    shutil.copytree(POLICIES, policies)
    server: Server = serve(tmp_path, database_url=database_url, policy_dir=policies, workers=2, server=server_name)
    try:
        found = Target(server.url, database_url, server_name)
        seed(found)
        yield found
    finally:
        server.stop()
