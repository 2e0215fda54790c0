"""Fail safe from the first call, catching up when the server returns; retries that never reserve twice."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from flask import Flask
from gatekeeper_client import AsyncGatekeeper, Denied, Gatekeeper, Unreachable, guarded
from werkzeug.serving import make_server

from tests.support.runtime import Runtime, counts, key_for
from tests.support.services import free_port

ran: list[str] = []


@guarded("lookup_customer", cost=0.001, read_only=True)
def lookup_customer(email: str) -> str:
    ran.append(f"lookup {email}")
    return "C-1"


@guarded("update_ticket", cost=0.01)
def update_ticket(ticket: str) -> str:
    ran.append(f"update {ticket}")
    return "updated"


@pytest.fixture(autouse=True)
def _clear() -> None:
    ran.clear()


@contextmanager
def serving(app: Flask, port: int) -> Iterator[None]:
    """Serve the real app on a chosen loopback port (the server coming back at the address the SDK knows)."""
    server = make_server("127.0.0.1", port, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def test_unreachable_from_the_start_then_caught_up(runtime: Runtime, token: str, app: Flask) -> None:
    runtime.setup("canary", 0)
    port = free_port()
    gk = Gatekeeper(f"http://127.0.0.1:{port}", token, timeout=1, retries=0, reconnect_after=0)
    with gk.session("bot", session_key=key_for("bot", runtime.rollout_id, 1.0, inside=False)) as session:
        assert session.session_id is None  # the server is down: no error yet, the session starts later
        assert lookup_customer("ana@example.com") == "C-1"  # read-only: runs
        with pytest.raises(Denied) as refused:
            update_ticket("T-1")
        assert refused.value.reason == "unreachable" and "only read-only tools" in refused.value.message
        with serving(app, port):  # the server returns: the next call starts the session and catches up
            assert update_ticket("T-2") == "updated"
            assert session.session_id is not None
        assert lookup_customer("bo@example.com") == "C-1"  # down again, later in the session
        with pytest.raises(Denied):
            update_ticket("T-3")
        ending = serving(app, port)
        ending.__enter__()  # up again when the session ends: the end catches up first
    ending.__exit__(None, None, None)
    assert ran == ["lookup ana@example.com", "update T-2", "lookup bo@example.com"]
    rows = [counts(app, "SELECT tool, arguments, outcome_status, latency_ms IS NOT NULL FROM decisions"
                        " WHERE session_id = :id ORDER BY rowid LIMIT 1 OFFSET :n", id=session.session_id, n=n)
            for n in range(3)]
    assert [(r[0], json.loads(r[1]), r[2], bool(r[3])) for r in rows] == [
        ("lookup_customer", {"email": "ana@example.com"}, "ok", True),  # replayed when the session started
        ("update_ticket", {"ticket": "T-2"}, "ok", True),
        ("lookup_customer", {"email": "bo@example.com"}, "ok", True)]  # replayed when the session ended
    assert counts(app, "SELECT status, tool_calls FROM sessions WHERE id = :id", id=session.session_id) == ("ok", 3)


def test_no_read_only_calls_when_so_configured(token: str) -> None:
    gk = Gatekeeper(f"http://127.0.0.1:{free_port()}", token, timeout=1, retries=0,
                    read_only_when_unreachable=False)
    with gk.session("bot"), pytest.raises(Denied):
        lookup_customer("ana@example.com")
    with pytest.raises(Unreachable):
        gk.start_session("bot")
    assert ran == []


class TimesOutOnce(httpx.HTTPTransport):
    """The network as it fails: the server decided, but its answer never arrived (once)."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[dict[str, Any]] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = super().handle_request(request)
        if request.url.path == "/v1/decisions":
            self.sent.append(json.loads(request.content))
            if len(self.sent) == 1:
                response.read()
                response.close()
                raise httpx.ReadTimeout("forced: the answer was lost", request=request)
        return response


class AsyncTimesOutOnce(httpx.AsyncHTTPTransport):
    def __init__(self) -> None:
        super().__init__()
        self.sent: list[dict[str, Any]] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await super().handle_async_request(request)
        if request.url.path == "/v1/decisions":
            self.sent.append(json.loads(request.content))
            if len(self.sent) == 1:
                await response.aread()
                await response.aclose()
                raise httpx.ReadTimeout("forced: the answer was lost", request=request)
        return response


@pytest.mark.parametrize("flavour", ["sync", "async"])
def test_a_decision_retried_after_a_timeout_reserves_once(runtime: Runtime, token: str, live_url: str,
                                                          app: Flask, flavour: str) -> None:
    runtime.setup("canary", 0)
    key = key_for("bot", runtime.rollout_id, 1.0, inside=True)
    if flavour == "sync":
        transport: Any = TimesOutOnce()
        session = Gatekeeper(live_url, token, transport=transport).start_session("bot", session_key=key)
        decision = session.decide("search_kb", 0.07, arguments={"query": "refunds"})
    else:
        transport = AsyncTimesOutOnce()

        async def decide() -> Any:
            async with AsyncGatekeeper(live_url, token, transport=transport) as agk:
                started = await agk.start_session("bot", session_key=key)
                return started, await started.decide("search_kb", 0.07, arguments={"query": "refunds"})

        session, decision = asyncio.run(decide())
    assert decision.allowed and decision.remaining_spend == pytest.approx(0.43)
    assert len(transport.sent) == 2 and transport.sent[0]["request_id"] == transport.sent[1]["request_id"]
    assert counts(app, "SELECT tool_calls, spend_micros FROM sessions WHERE id = :id",
                  id=session.session_id) == (1, 70_000)
    assert counts(app, "SELECT count(*) FROM decisions WHERE session_id = :id", id=session.session_id)[0] == 1


def test_a_server_that_never_answers_costs_bounded_time(token: str) -> None:
    listener = socket.socket()  # accepts connections, never answers
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    try:
        gk = Gatekeeper(f"http://127.0.0.1:{listener.getsockname()[1]}", token, timeout=0.5, retries=1,
                        reconnect_after=30)
        started = time.monotonic()
        with gk.session("bot"):  # its start waits one timeout (a session start has no request id: no retry)
            for _ in range(5):  # then, for `reconnect_after`, every call is decided at once, without the server
                assert lookup_customer("ana@example.com") == "C-1"
                with pytest.raises(Denied):
                    update_ticket("T-1")
        assert time.monotonic() - started < 1.5
    finally:
        listener.close()
    assert ran == ["lookup ana@example.com"] * 5
