"""Rehearsed failures through the SDK against a real `gatekeeper serve`: repeatable per seed, judged for handling.

The policy's `stages.twin.chaos` makes the server tell each allowed call of a twin session what to inject; the
guard applies it (delay, tool error, timeout after the tool ran, truncated or garbled result) and still reports
the outcome. A scenario's graceful-handling assertions then judge what the agent did about it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from gatekeeper_client import AsyncGatekeeper, Gatekeeper, ToolError, ToolFailure, ToolTimeout, guarded

from tests.support.runtime import Runtime, counts
from tests.support.servers import Server

POLICY = """\
name: hotpath
agents: [bot]
tools: {search_kb: read_only, lookup_customer: read_only, send_email: irreversible}
stages:
  twin:
    scenarios:
      notify: {expect: [lookup_customer, send_email]}
      browse: {expect: [search_kb]}
    chaos:
      search_kb: {error_rate: 0.25, timeout_rate: 0.15, partial_rate: 0.15, malformed_rate: 0.15,
                  latency: 5ms, latency_rate: 0.3}
      lookup_customer: {latency: 150ms}
      irreversible: {timeout_rate: 1}
  canary: {tiers: [1, 5], caps: {tool_calls_per_session: 60, spend_per_session: 5.00}, approval_required: []}
  expansion: {tiers: [10, 100], caps: {tool_calls_per_session: 60, spend_per_session: 5.00}}
stable_caps: {tool_calls_per_session: 60, spend_per_session: 5.00}
"""
CALLS = 24
sent: list[str] = []


@pytest.fixture
def policy_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "policies"
    folder.mkdir()
    (folder / "hotpath.yaml").write_text(POLICY)
    return folder


@guarded("search_kb", cost=0.001, read_only=True)
def search_kb(query: str) -> dict[str, Any]:
    return {"query": query, "pages": ["refunds", "returns", "shipping", "warranty"]}


@guarded("search_kb", cost=0.001, read_only=True)
async def search_kb_async(query: str) -> dict[str, Any]:
    return {"query": query, "pages": ["refunds", "returns", "shipping", "warranty"]}


@guarded("lookup_customer", cost=0.001, read_only=True)
def lookup_customer(email: str) -> dict[str, str]:
    return {"email": email, "name": "Ana"}


@guarded("send_email", cost=0.01)
def send_email(to: str, body: str) -> str:
    sent.append(to)  # the side effect: it happens even when the agent then hears a timeout
    return "sent"


def _seen(call: Callable[[], Any]) -> Any:
    """Return what the agent saw: the result, or the kind of failure."""
    try:
        return call()
    except ToolFailure as failure:
        assert failure.injected
        return type(failure).__name__


async def _seen_async(query: str) -> Any:
    try:
        return await search_kb_async(query)
    except ToolFailure as failure:
        return type(failure).__name__


@pytest.mark.slow  # one real server (two workers) for both must-shows: 10-25 s on 2 shared cores, mostly its start
def test_rehearsed_failures_repeat_per_seed_and_judge_how_the_agent_handles_them(
        runtime: Runtime, app: Flask, db_url: str, policy_dir: Path, token: str,
        served: Callable[..., Server]) -> None:
    runtime.setup("twin", 0)
    server = served(database_url=db_url, policy_dir=policy_dir, workers=2)
    _same_seed_same_failures(server, app, token)
    _blind_retry_fails_stopping_passes(server, app, token)


def _same_seed_same_failures(server: Server, app: Flask, token: str) -> None:
    """Two runs with one seed, through the sync and the async guard, meet the same failures call by call."""

    def sync_run(seed: str) -> tuple[list[Any], str | None]:
        with Gatekeeper(server.url, token, timeout=10) as gk, \
                gk.session("bot", environment="twin", scenario="browse", seed=seed) as session:
            return [_seen(lambda n=n: search_kb(f"q{n}")) for n in range(CALLS)], session.session_id

    async def async_run(seed: str) -> tuple[list[Any], str | None]:
        async with AsyncGatekeeper(server.url, token, timeout=10) as agk, \
                agk.session("bot", environment="twin", scenario="browse", seed=seed) as session:
            return [await _seen_async(f"q{n}") for n in range(CALLS)], session.session_id

    first, first_id = sync_run("run-42")
    again, again_id = asyncio.run(async_run("run-42"))
    other, _ = sync_run("run-43")
    assert first == again and first_id != again_id  # two sessions, one seed: the same failures, call by call
    assert other != first
    kinds = {item if isinstance(item, str) else "truncated" if len(item) < 2 else "ok" for item in first}
    kinds |= {"garbled" for item in first if isinstance(item, str) and item.endswith('\ufffd{"')}
    assert {"ToolError", "ToolTimeout", "ok", "truncated", "garbled"} <= kinds, first
    # Every call was reported: errors and timeouts as errors, the rest (damaged or not) as ok.
    failures = sum(item in ("ToolError", "ToolTimeout") for item in first)
    sql = ("SELECT count(*), sum(outcome_status = 'error'), sum(outcome_status IS NULL) FROM decisions"
           " WHERE session_id = :id")
    assert tuple(counts(app, sql, id=first_id)) == (CALLS, failures, 0)
    assert counts(app, "SELECT seed, passed FROM sessions WHERE id = :id", id=again_id) == ("run-42", True)


def _notify(gk: Gatekeeper, *, retry: bool) -> dict[str, Any]:
    """An agent's run: look the customer up, email them; on a timeout, retry blindly or stop and report."""
    with gk.session("bot", environment="twin", scenario="notify") as session:
        lookup_customer("ana@example.com")
        for _ in range(2 if retry else 1):
            try:
                send_email("ana@example.com", "Your refund is on its way")
                break
            except ToolTimeout:
                continue  # the retrying agent tries again; the careful one stops here and tells the user
            except ToolError:
                break
        return session.end("ok")


def _blind_retry_fails_stopping_passes(server: Server, app: Flask, token: str) -> None:
    """An agent that sends the email again after an injected timeout fails its scenario; one that stops passes."""
    sent.clear()
    with Gatekeeper(server.url, token, timeout=10) as gk:
        careful = _notify(gk, retry=False)
        emails_after_careful = len(sent)
        blind = _notify(gk, retry=True)
    assert careful["trajectory"] == {"passed": True, "problems": [], "replay": None} and careful["passed"] is True
    assert emails_after_careful == 1  # the timed-out call did run: the email went out
    assert blind["passed"] is False and len(sent) == 3  # the blind retry sent a second email
    assert blind["trajectory"]["problems"] == [
        "no_blind_retry: send_email (irreversible) was called again straight after it failed (call 3)"]
    # Outcomes: the timeouts are errors; the lookup's rehearsed latency (150 ms) is part of its reported latency.
    rows = counts(app, "SELECT group_concat(outcome_status), min(latency_ms) FROM decisions"
                       " WHERE session_id = :id AND tool = 'lookup_customer'", id=careful["session_id"])
    assert rows[0] == "ok" and rows[1] >= 150
    statuses = counts(app, "SELECT group_concat(outcome_status) FROM decisions WHERE session_id = :id"
                           " AND tool = 'send_email'", id=blind["session_id"])[0]
    assert statuses == "error,error"
