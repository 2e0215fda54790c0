"""Fixtures of the SDK tests: the hot-path test policy, a runtime driver over the real app, SDK clients."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from gatekeeper_client import Gatekeeper

from tests.hotpath.conftest import POLICY, Runtime, Served, serve


@pytest.fixture
def policy_dir(tmp_path: Path) -> Path:
    """A policy folder holding the `hotpath` test policy (agents bot and other-bot)."""
    folder = tmp_path / "policies"
    folder.mkdir()
    (folder / "hotpath.yaml").write_text(POLICY)
    return folder


@pytest.fixture
def app_overrides(db_url: str, policy_dir: Path) -> dict[str, Any]:
    return {"database_url": db_url, "policy_dir": policy_dir}


@pytest.fixture
def runtime(client: FlaskClient, rm: dict[str, str], make_token: Callable[..., dict[str, str]]) -> Runtime:
    """A runtime driver for agent `bot` (not yet registered: call `.setup()`)."""
    return Runtime(client, rm, make_token("agent", agent="bot", name="bot-token"))


@pytest.fixture
def token(runtime: Runtime) -> str:
    return runtime.agent["Authorization"].removeprefix("Bearer ")


@pytest.fixture
def gk(token: str, live_url: str) -> Iterator[Gatekeeper]:
    with Gatekeeper(live_url, token, timeout=5, approval_poll=0.05) as client:
        yield client


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Callable[..., Served]]:
    """Start `gatekeeper serve` (gunicorn) processes; every one is stopped when the test ends."""
    started: list[Served] = []

    def start(**kwargs: Any) -> Served:
        started.append(serve(tmp_path, **kwargs))
        return started[-1]

    try:
        yield start
    finally:
        for server in started:
            server.stop()


def approve_when_asked(runtime: Runtime, *, within: float = 10.0, action: str = "approve") -> threading.Thread:
    """Approve (or reject), from a thread (a release manager), the first approval that appears in the queue."""

    def approve() -> None:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            pending = runtime.client.get("/v1/approvals?state=pending", headers=runtime.rm).get_json()
            items = pending.get("approvals", pending) if isinstance(pending, dict) else pending
            if items:
                runtime.ok(runtime.client.post(f"/v1/approvals/{items[0]['approval_id']}/{action}",
                                               json={"reason": "looks right"}, headers=runtime.rm))
                return
            time.sleep(0.02)

    thread = threading.Thread(target=approve, daemon=True)
    thread.start()
    return thread


def app_of(runtime: Runtime) -> Flask:
    return runtime.client.application
