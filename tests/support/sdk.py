"""Fixtures and helpers of the SDK tests: the hot path's runtime driver with a real `Gatekeeper` client."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
from flask import Flask
from gatekeeper_client import Gatekeeper

from tests.support.runtime import Runtime


@pytest.fixture
def token(runtime: Runtime) -> str:
    return runtime.agent["Authorization"].removeprefix("Bearer ")


@pytest.fixture
def gk(token: str, live_url: str) -> Iterator[Gatekeeper]:
    with Gatekeeper(live_url, token, timeout=5, approval_poll=0.05) as client:
        yield client


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
