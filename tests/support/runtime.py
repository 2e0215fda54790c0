"""Fixtures of the hot-path tests: a test policy, a runtime driver over the real app, real gunicorn servers."""

from __future__ import annotations

import http.client
import json
import multiprocessing
import threading
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import text

from gatekeeper.core.bucketing import bucket, within
from tests.support.servers import Server, server_env, start_serve

POLICY = """\
name: hotpath
agents: [bot, other-bot]
tools: {search_kb: read_only, lookup_customer: read_only, update_ticket: reversible,
        send_email: irreversible, refund_payment: irreversible}
sequence_rules:
  - before: lookup_customer
    then: refund_payment
  - max_calls: {send_email: 1}
stages:
  twin:
    scenarios:
      refund-request: {expect: [lookup_customer, refund_payment, send_email], forbid: [update_ticket]}
  shadow: {traffic_percent: 50, execute: [read_only]}
  canary: {tiers: [1, 5], caps: {tool_calls_per_session: 20, spend_per_session: 0.50},
           approval_required: [irreversible]}
  expansion: {tiers: [10, 25, 50, 100], caps: {tool_calls_per_session: 40, spend_per_session: 1.00}}
stable_caps: {tool_calls_per_session: 60, spend_per_session: 2.00}
kill_switch: {window: 60s, min_calls: 10, max_error_rate: 0.25, action: {revert_to: shadow}}
approvals: {expire_after: 15m, redact: [card_number, password]}
"""
LADDER = [("twin", 0), ("shadow", 0), ("canary", 0), ("canary", 1), ("expansion", 0), ("expansion", 1),
          ("expansion", 2), ("expansion", 3)]
PERCENT = {("canary", 0): 1.0, ("canary", 1): 5.0, ("expansion", 0): 10.0, ("expansion", 1): 25.0,
           ("expansion", 2): 50.0, ("expansion", 3): 100.0, ("shadow", 0): 50.0}


# The same policy with one more irreversible tool that no sequence rule names (the one-statement paths).
WITH_WIRE_MONEY = POLICY.replace("refund_payment: irreversible}",
                                 "refund_payment: irreversible, wire_money: irreversible}")


def policy_folder(tmp_path: Path, text: str = POLICY) -> Path:
    """Return a policy folder holding `text` as the `hotpath` policy."""
    folder = tmp_path / "policies"
    folder.mkdir()
    (folder / "hotpath.yaml").write_text(text)
    return folder


@pytest.fixture
def policy_dir(tmp_path: Path) -> Path:
    """A policy folder holding the `hotpath` test policy (agents bot and other-bot)."""
    return policy_folder(tmp_path)


@pytest.fixture
def app_overrides(db_url: str, policy_dir: Path) -> dict[str, Any]:
    return {"database_url": db_url, "policy_dir": policy_dir}


def key_for(agent: str, rollout_id: int, percent: float, *, inside: bool, start: int = 0) -> str:
    """Return a session key whose bucket is inside (or outside) the first `percent` of buckets."""
    for n in range(start, start + 1_000_000):
        if within(bucket(agent, rollout_id, f"key-{n}"), percent) == inside:
            return f"key-{n}"
    raise AssertionError("no such key")


@dataclass
class Runtime:
    """Drive the real app through its test client: a release manager sets up, an agent calls."""

    client: FlaskClient
    rm: dict[str, str]
    agent: dict[str, str]
    name: str = "bot"
    rollout_id: int = 0

    def setup(self, stage: str | None = "canary", tier: int = 0) -> Runtime:
        """Register the agent with stable v1 and walk a v2 rollout up to (stage, tier); None: no rollout."""
        self.ok(self.client.post("/v1/agents", json={"name": self.name, "policy": "hotpath",
                                                     "stable_version": "v1"}, headers=self.rm))
        if stage is None:
            return self
        answer = self.ok(self.client.post(f"/v1/agents/{self.name}/rollouts", json={"version": "v2"},
                                          headers=self.rm))
        self.rollout_id = answer["status"]["rollout"]["id"]
        for _ in range(LADDER.index((stage, tier))):
            self.act("promote")
        return self

    def act(self, action: str, **body: Any) -> dict[str, Any]:
        """Take a release-manager action on the agent's rollout."""
        return self.ok(self.client.post(f"/v1/agents/{self.name}/{action}", json={"reason": "test", **body},
                                        headers=self.rm))

    def session(self, *, candidate: bool | None = None, percent: float | None = None, **body: Any
                ) -> dict[str, Any]:
        """Start a live session, choosing a key that lands in the candidate (or stable) arm."""
        if candidate is not None:
            body["session_key"] = key_for(self.name, self.rollout_id, percent or 1.0, inside=candidate)
        return self.ok(self.client.post("/v1/sessions", json={"agent": self.name, **body}, headers=self.agent))

    def decide(self, session_id: str, tool: str, cost: float = 0.01, **body: Any) -> dict[str, Any]:
        """Ask for a verdict (200 expected)."""
        return self.ok(self.client.post("/v1/decisions", json={"session_id": session_id, "tool": tool,
                                                               "cost": cost, **body}, headers=self.agent))

    def report(self, decision_id: str, status: str = "ok", **body: Any) -> dict[str, Any]:
        """Report an outcome (200 expected)."""
        return self.ok(self.client.post(f"/v1/decisions/{decision_id}/outcome", json={"status": status, **body},
                                        headers=self.agent))

    def rollout(self) -> dict[str, Any]:
        """Return the agent's rollout as the API shows it."""
        found: dict[str, Any] = self.ok(self.client.get(f"/v1/agents/{self.name}", headers=self.rm))["rollout"]
        return found

    @staticmethod
    def ok(response: Any) -> Any:
        assert response.status_code in (200, 201), (response.status_code, response.get_json())
        return response.get_json()


@pytest.fixture
def runtime(client: FlaskClient, rm: dict[str, str], make_token: Callable[..., dict[str, str]]) -> Runtime:
    """A runtime driver for agent `bot` (not yet registered: call `.setup()`)."""
    return Runtime(client, rm, make_token("agent", agent="bot", name="bot-token"))


def counts(app: Flask, sql: str, **params: Any) -> Any:
    """Run one read-only SQL query (`:name` parameters) on the app's database and return its first row."""
    with app.extensions["gatekeeper"].db.engine.connect() as connection:
        return connection.execute(text(sql), params).first()


def retry_storm(urls: Sequence[str], token: str, body: dict[str, Any], *, processes: int = 64
                ) -> list[tuple[int, Any]]:
    """Send the same decision from `processes` forked processes at once, spread over `urls`; return each
    (status, answer)."""
    context = multiprocessing.get_context("fork")
    barrier, answers = context.Barrier(processes), context.Queue()
    workers = [context.Process(target=_send_once, args=(urls[n % len(urls)], token, body, barrier, answers),
                               daemon=True) for n in range(processes)]
    for worker in workers:
        worker.start()
    try:
        return [answers.get(timeout=60) for _ in workers]
    finally:
        for worker in workers:
            worker.join(timeout=10)
            if worker.is_alive():
                worker.kill()
                worker.join(timeout=5)


def assert_one_reservation_for_64_retries(runtime: Runtime, app: Flask, urls: Sequence[str]) -> None:
    """64 processes send one call under one request id, spread over `urls`: one reservation, one answer."""
    session = runtime.session(candidate=True)["session_id"]
    body = {"session_id": session, "tool": "search_kb", "cost": 0.07, "request_id": "storm-1",
            "arguments": {"query": "where is my refund"}}
    answers = retry_storm(urls, runtime.agent["Authorization"].removeprefix("Bearer "), body)
    assert [status for status, _ in answers] == [200] * 64, [a for a in answers if a[0] != 200][:3]
    first = answers[0][1]
    assert first["verdict"] == "allow" and first["remaining"] == {"tool_calls": 19, "spend": 0.43}
    keys = ("decision_id", "verdict", "reason", "message", "remaining")
    assert {tuple(str(answer[k]) for k in keys) for _, answer in answers} == {tuple(str(first[k]) for k in keys)}
    assert counts(app, "SELECT tool_calls, spend_micros FROM sessions WHERE id = :id", id=session) == (1, 70_000)
    assert counts(app, "SELECT count(*) FROM decisions WHERE session_id = :id", id=session)[0] == 1


def _send_once(url: str, token: str, body: dict[str, Any], barrier: Any, answers: Any) -> None:
    """One retrying client (a child process): wait for the others, then POST the decision."""
    host, port = url.removeprefix("http://").split(":")
    try:
        barrier.wait(timeout=30)
        connection = http.client.HTTPConnection(host, int(port), timeout=30)
        connection.request("POST", "/v1/decisions", body=json.dumps(body),
                           headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
        answer = connection.getresponse()
        answers.put((answer.status, json.loads(answer.read())))
    except Exception as exc:  # noqa: BLE001 - reported to the test, which fails on it
        answers.put((0, repr(exc)))


# -- real gunicorn servers -------------------------------------------------------------------


def serve(tmp_path: Path, *, database_url: str, policy_dir: Path, workers: int = 2, name: str = "serve",
          upgrade: bool = True, server: str | None = None) -> Server:
    """Start `gatekeeper serve` with a fixed signing key and wait until /readyz answers 200."""
    return start_serve(tmp_path, database_url=database_url, policy_dir=policy_dir, workers=workers, name=name,
                       args=["--upgrade" if upgrade else "--no-upgrade"], server=server,
                       env=server_env(database_url, policy_dir, GATEKEEPER_SECRET_KEY="test-secret"))


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    """Start `gatekeeper serve` processes; every one is stopped when the test ends."""
    started: list[Server] = []

    def start(**kwargs: Any) -> Server:
        started.append(serve(tmp_path, **kwargs))
        return started[-1]

    try:
        yield start
    finally:
        for server in started:
            server.stop()


# -- 64 concurrent clients against real `gatekeeper serve` processes (SQLite and Postgres) ----

CLIENTS = 64
ROUNDS = 3  # each client asks ROUNDS times per session: demand 192 per session, far above every cap

# (arm, cost in dollars) -> calls the caps allow: canary caps 20 calls/$0.50, stable caps 60 calls/$2.00
PLAN = [("candidate", 0.01, 20), ("candidate", 0.03, 16), ("stable", 0.03, 60), ("stable", 0.07, 28)]


def open_sessions(runtime: Runtime) -> list[tuple[str, float, int]]:
    """Open the sessions of PLAN on a canary rollout; return (session id, cost, allowed calls)."""
    runtime.setup("canary", 0)
    found = []
    for index, (arm, cost, allowed) in enumerate(PLAN):
        inside = arm == "candidate"
        session = runtime.session(session_key=key_for("bot", runtime.rollout_id, 1.0, inside=inside,
                                                      start=index * 1000))
        assert session["arm"] == arm
        found.append((session["session_id"], cost, allowed))
    return found


def hammer(urls: Sequence[str], token: str, plan: list[tuple[str, float, int]]) -> Counter[tuple[str, str]]:
    """Run CLIENTS threads that all ask for every session's calls at once; count (session, verdict)."""
    verdicts: Counter[tuple[str, str]] = Counter()
    errors: list[str] = []
    lock, start = threading.Lock(), threading.Barrier(CLIENTS)

    def client(number: int) -> None:
        http = requests.Session()
        http.headers["Authorization"] = f"Bearer {token}"
        url = urls[number % len(urls)]
        start.wait(timeout=30)
        for _ in range(ROUNDS):
            for session, cost, _allowed in plan:
                answer = http.post(f"{url}/v1/decisions", json={"session_id": session, "tool": "search_kb",
                                                               "cost": cost}, timeout=30)
                with lock:
                    if answer.status_code != 200:
                        errors.append(f"{answer.status_code} {answer.text[:200]}")
                    else:
                        verdicts[(session, answer.json()["verdict"])] += 1

    threads = [threading.Thread(target=client, args=(n,)) for n in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors[:5]
    return verdicts


def assert_exact(app: Flask, plan: list[tuple[str, float, int]], verdicts: Counter[tuple[str, str]]) -> None:
    """Allowed calls and reserved spend equal the caps' share exactly, in the answers and in the database."""
    for session, cost, allowed in plan:
        assert verdicts[(session, "allow")] == allowed, (cost, verdicts)
        assert verdicts[(session, "deny")] == CLIENTS * ROUNDS - allowed
        row = counts(app, "SELECT tool_calls, spend_micros FROM sessions WHERE id = :id", id=session)
        assert tuple(row) == (allowed, round(allowed * cost * 1_000_000))
        stored = counts(app, "SELECT count(*), sum(cost_micros) FROM decisions WHERE session_id = :id"
                             " AND verdict = 'allow'", id=session)
        assert tuple(stored) == (allowed, row[1])
