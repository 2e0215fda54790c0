"""Shared fixtures: a real app on a temporary SQLite file, tokens of every role, the real test client."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from gatekeeper import create_app
from gatekeeper.store.tokens import create_token
from tests.support.app import POLICIES, svc
from tests.support.http import serve_app
from tests.support.services import PostgresServer


@pytest.fixture
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh SQLite database file for one test; parametrized indirectly with "postgres", a Postgres database."""
    if getattr(request, "param", "sqlite") == "postgres":
        server: PostgresServer = request.getfixturevalue("postgres")
        return server.create_database("gk_test")
    return f"sqlite:///{tmp_path / 'gatekeeper.db'}"


@pytest.fixture
def app_overrides(db_url: str) -> dict[str, Any]:
    """Settings of the app under test; override this fixture to change them."""
    return {"database_url": db_url, "policy_dir": POLICIES}


@pytest.fixture
def app(app_overrides: dict[str, Any]) -> Iterator[Flask]:
    """The real Flask app with its schema created."""
    application = create_app(app_overrides)
    svc(application).db.upgrade()
    yield application
    svc(application).db.dispose()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture(scope="session")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer]:
    """One real Postgres for the run; each test that needs it creates its own database."""
    with PostgresServer(tmp_path_factory.mktemp("pg")) as server:
        yield server


@pytest.fixture
def live_url(app: Flask) -> Iterator[str]:
    """The real app served on a free loopback port for the test's duration."""
    with serve_app(app) as url:
        yield url


@pytest.fixture
def make_token(app: Flask) -> Callable[..., dict[str, str]]:
    """Create a token of a role and return its Authorization header."""

    def make(role: str, *, agent: str | None = None, name: str | None = None) -> dict[str, str]:
        with svc(app).db.transaction() as db:
            token, _ = create_token(name or role, role=role, agent=agent, now=time.time(), db=db)
        return {"Authorization": f"Bearer {token}"}

    return make


@pytest.fixture
def rm(make_token: Callable[..., dict[str, str]]) -> dict[str, str]:
    """Headers of a release manager."""
    return make_token("release_manager", name="alice")


@pytest.fixture
def viewer(make_token: Callable[..., dict[str, str]]) -> dict[str, str]:
    """Headers of a viewer."""
    return make_token("viewer", name="victor")
