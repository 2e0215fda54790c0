"""Fixtures of the adapter tests: the real app on a loopback port, an agent at a chosen stage, a release manager.

Every framework test drives the same agent, `helpdesk`, through its framework's own offline test model:
the calls land on the real Gatekeeper app served on 127.0.0.1, and a release manager approves through the
HTTP API from a thread while the run waits (or between two steps of it).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import text

from gatekeeper.core.bucketing import bucket, within

POLICY = """\
name: adapters
agents: [helpdesk]
tools: {search_kb: read_only, lookup_customer: read_only, update_ticket: reversible,
        send_email: irreversible, refund_payment: irreversible}
sequence_rules:
  - before: lookup_customer
    then: refund_payment
stages:
  twin: {}
  shadow: {traffic_percent: 100, execute: [read_only]}
  canary: {tiers: [50], caps: {tool_calls_per_session: 20, spend_per_session: 0.50},
           approval_required: [irreversible]}
  expansion: {tiers: [100], caps: {tool_calls_per_session: 40, spend_per_session: 1.00}}
stable_caps: {tool_calls_per_session: 60, spend_per_session: 2.00}
approvals: {expire_after: 15m, redact: [card_number]}
"""
AGENT = "helpdesk"
PROMOTIONS = {"twin": 0, "shadow": 1, "canary": 2, "expansion": 3}
DENIED_MESSAGE = "refund_payment is not allowed until lookup_customer has run in this session."
SHADOW_MESSAGE = ("The call was recorded but not run, because this agent version runs in shadow beside the "
                  "stable version.")
REJECTED_MESSAGE = "A person did not approve this call (the approval is rejected), so it did not run."


@pytest.fixture
def app_overrides(db_url: str, tmp_path: Path) -> dict[str, Any]:
    folder = tmp_path / "policies"
    folder.mkdir()
    (folder / "adapters.yaml").write_text(POLICY)
    return {"database_url": db_url, "policy_dir": folder}


@dataclass
class Desk:
    """The `helpdesk` agent on the real app: a release manager sets it up, its runtime gets a token."""

    app: Flask
    client: FlaskClient
    url: str
    rm: dict[str, str]
    token: str
    rollout_id: int = 0

    def at(self, stage: str) -> Desk:
        """Register the agent with stable v1 and walk a v2 rollout up to the first tier of `stage`."""
        self.ok(self.client.post("/v1/agents", json={"name": AGENT, "policy": "adapters", "stable_version": "v1"},
                                 headers=self.rm))
        answer = self.ok(self.client.post(f"/v1/agents/{AGENT}/rollouts", json={"version": "v2"}, headers=self.rm))
        self.rollout_id = answer["status"]["rollout"]["id"]
        for _ in range(PROMOTIONS[stage]):
            self.ok(self.client.post(f"/v1/agents/{AGENT}/promote", json={"reason": "test"}, headers=self.rm))
        return self

    def candidate_key(self, start: int = 0) -> str:
        """Return a session key that lands in the candidate arm at the canary's 50% tier."""
        for n in range(start, start + 10_000):
            if within(bucket(AGENT, self.rollout_id, f"conversation-{n}"), 50.0):
                return f"conversation-{n}"
        raise AssertionError("no candidate key")

    def decisions(self) -> list[dict[str, Any]]:
        """Return every decision on the app's database, oldest first."""
        with self.app.extensions["gatekeeper"].db.engine.connect() as connection:
            rows = connection.execute(text(
                "SELECT tool, verdict, reason, outcome_status, latency_ms, approval_id FROM decisions "
                "ORDER BY at, rowid")).mappings().all()
        return [dict(row) for row in rows]

    @staticmethod
    def ok(response: Any) -> Any:
        assert response.status_code in (200, 201), (response.status_code, response.get_json())
        return response.get_json()


@pytest.fixture
def desk(app: Flask, client: FlaskClient, live_url: str, make_token: Callable[..., dict[str, str]]) -> Desk:
    """The `helpdesk` agent (not yet registered: call `.at(stage)`), served on a loopback port."""
    agent = make_token("agent", agent=AGENT, name="helpdesk-runtime")
    return Desk(app, client, live_url, make_token("release_manager", name="rm"),
                agent["Authorization"].removeprefix("Bearer "))


@dataclass
class ReleaseManager:
    """A person at the approval queue, in a thread: approves (or rejects) each pending approval once it appears."""

    url: str
    headers: dict[str, str]
    action: str = "approve"
    seen: list[dict[str, Any]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def watch(self) -> None:
        """Poll the queue every 50 ms for at most 60 s, acting on every pending approval through the API."""
        deadline = time.monotonic() + 60
        while not self.stop.is_set() and time.monotonic() < deadline:
            pending = requests.get(f"{self.url}/v1/approvals", params={"state": "pending"}, headers=self.headers,
                                   timeout=5).json()
            for approval in pending:
                answer = requests.post(f"{self.url}/v1/approvals/{approval['approval_id']}/{self.action}",
                                       json={"reason": "checked the recipient"}, headers=self.headers, timeout=5)
                assert answer.status_code == 200, answer.text
                self.seen.append(approval)
            self.stop.wait(0.05)


@pytest.fixture
def release_manager(desk: Desk) -> Iterator[ReleaseManager]:
    """A release manager approving every pending approval from a thread while the test runs."""
    yield from _at_the_queue(ReleaseManager(desk.url, desk.rm))


@pytest.fixture
def strict_release_manager(desk: Desk) -> Iterator[ReleaseManager]:
    """A release manager rejecting every pending approval from a thread while the test runs."""
    yield from _at_the_queue(ReleaseManager(desk.url, desk.rm, action="reject"))


def _at_the_queue(person: ReleaseManager) -> Iterator[ReleaseManager]:
    thread = threading.Thread(target=person.watch, name="release-manager", daemon=True)
    thread.start()
    try:
        yield person
    finally:
        person.stop.set()
        thread.join(timeout=10)
