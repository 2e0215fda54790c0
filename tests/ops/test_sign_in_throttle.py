"""Failed sign-ins are throttled per user and per address, across workers and replicas (issue 12 §8)."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path

import requests
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import text

from gatekeeper import create_app
from gatekeeper.store.tokens import create_user
from tests.support.app import POLICIES, svc
from tests.support.servers import Server, prepare_database
from tests.support.services import PostgresServer

PASSWORD = "correct horse battery"


def _csrf(html: str) -> str:
    found = re.search(r'name="csrf-token" content="([^"]+)"', html)
    assert found, "the page carries no CSRF token"
    return found.group(1)


def attempt(client: FlaskClient, username: str, password: str, *, address: str = "10.0.0.1") -> tuple[int, str]:
    """Post the sign-in form from `address`; return the status and the page."""
    environ = {"REMOTE_ADDR": address}
    token = _csrf(client.get("/login", environ_base=environ).get_data(as_text=True))
    response = client.post("/login", data={"username": username, "password": password, "csrf_token": token},
                           environ_base=environ)
    return response.status_code, response.get_data(as_text=True)


def add_users(app: Flask, *names: str) -> None:
    with svc(app).db.transaction() as db:
        for name in names:
            create_user(name, password=PASSWORD, role="viewer", now=time.time(), db=db)


def test_five_failures_for_a_user_refuse_even_the_right_password_until_the_window_passes(
        app: Flask, client: FlaskClient) -> None:
    add_users(app, "alice", "bob")
    for n in range(5):
        assert attempt(client, "alice", f"guess-{n}", address=f"10.0.1.{n}")[0] == 401  # five addresses
    status, page = attempt(app.test_client(), "alice", PASSWORD, address="10.0.2.1")
    assert status == 429 and "Too many failed sign-ins" in page and "Wait 5 minutes" in page
    assert attempt(app.test_client(), "bob", PASSWORD, address="10.0.2.1")[0] == 303  # others are not locked out
    with svc(app).db.engine.begin() as connection:  # the window passes
        connection.execute(text("UPDATE sign_in_failures SET at = at - 301"))
    assert attempt(app.test_client(), "alice", PASSWORD, address="10.0.2.1")[0] == 303


def test_five_failures_from_an_address_refuse_it_whatever_the_username(app: Flask, client: FlaskClient) -> None:
    add_users(app, "alice")
    for n in range(5):
        assert attempt(client, f"user{n}", "guess", address="10.9.9.9")[0] == 401
    assert attempt(app.test_client(), "alice", PASSWORD, address="10.9.9.9")[0] == 429
    assert attempt(app.test_client(), "alice", PASSWORD, address="10.9.9.10")[0] == 303


def test_a_successful_sign_in_forgets_the_users_failures(app: Flask, client: FlaskClient) -> None:
    add_users(app, "alice")
    for n in range(4):
        assert attempt(client, "alice", "guess", address=f"10.0.3.{n}")[0] == 401
    assert attempt(app.test_client(), "alice", PASSWORD, address="10.0.3.9")[0] == 303
    assert attempt(client, "alice", "guess", address="10.0.3.10")[0] == 401  # counting starts again
    assert attempt(app.test_client(), "alice", PASSWORD, address="10.0.3.11")[0] == 303


def _post_sign_in(base: str, password: str) -> int:
    """Sign in with a fresh connection and cookie jar, as a new browser would."""
    with requests.Session() as http:
        page = http.get(f"{base}/login", timeout=10).text
        answer = http.post(f"{base}/login", data={"username": "alice", "password": password,
                                                  "csrf_token": _csrf(page)}, allow_redirects=False, timeout=10)
        return answer.status_code


def test_the_throttle_is_shared_by_gunicorn_workers_and_replicas(
        tmp_path: Path, servers: Callable[..., Server]) -> None:
    url = f"sqlite:///{tmp_path / 'gk.db'}"
    prepare_database(url, users={"alice": PASSWORD})
    first, second = servers(database_url=url, workers=2), servers(database_url=url, workers=2)
    assert [_post_sign_in(s.url, "wrong password") for s in (first, second, first, second, first)] == [401] * 5
    for server in (first, second, first, second):
        assert _post_sign_in(server.url, PASSWORD) == 429


def test_a_nul_in_the_username_is_refused_before_it_counts(app: Flask, client: FlaskClient) -> None:
    add_users(app, "alice")
    assert attempt(client, "ali\x00ce", "guess")[0] == 400  # the edge refuses NUL in any form field
    assert attempt(client, "alice", "guess")[0] == 401
    with svc(app).db.engine.connect() as connection:
        assert connection.execute(text("SELECT username FROM sign_in_failures")).scalars().all() == ["alice"]


def test_the_throttle_counts_the_same_on_postgres(postgres: PostgresServer) -> None:
    app = create_app({"database_url": postgres.create_database("throttle"), "policy_dir": POLICIES})
    svc(app).db.upgrade()
    try:
        add_users(app, "alice")
        for n in range(5):
            assert attempt(app.test_client(), "alice", "guess", address=f"10.0.4.{n}")[0] == 401
        assert attempt(app.test_client(), "alice", PASSWORD, address="10.0.4.9")[0] == 429
        assert attempt(app.test_client(), "ali\x00ce", PASSWORD, address="10.0.5.1")[0] == 400
    finally:
        svc(app).db.dispose()
