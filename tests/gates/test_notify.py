"""Transition notifications: the outbox is filled in the transition's transaction, delivered later."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest

from gatekeeper import rollouts
from gatekeeper.errors import IllegalTransition
from gatekeeper.notify import MAX_ATTEMPTS, WebhookSender, deliver_due, url_id
from gatekeeper.services import Services
from gatekeeper.store.models import Notification, Transition
from tests.support.gates import T0, place, rows
from tests.support.http import LoopbackHTTPServer, RecordedRequest
from tests.support.services import free_port


@pytest.fixture
def receiver() -> Iterator[LoopbackHTTPServer]:
    with LoopbackHTTPServer() as server:
        yield server


class Flaky:
    """Answer 500 until told to recover."""

    def __init__(self) -> None:
        self.healthy = False

    def __call__(self, request: RecordedRequest) -> tuple[int, str, bytes]:
        return (200, "application/json", b"{}") if self.healthy else (500, "text/plain", b"down")


def test_every_transition_is_queued_in_its_own_transaction(services: Services) -> None:
    place(services, stage="shadow")
    with pytest.raises(IllegalTransition):
        rollouts.act(services, "bot", "release", actor="test", reason="not held", now=T0)
    queued, done = rows(services, Notification), rows(services, Transition)
    assert [n.transition_id for n in queued] == [t.id for t in done]
    event = json.loads(queued[-1].payload)["event"]
    assert {k: event[k] for k in ("event", "agent", "action", "candidate_version", "to")} == {
        "event": "rollout.transition", "agent": "bot", "action": "promote", "candidate_version": "v2",
        "to": {"stage": "shadow", "tier": 0, "state": "progressing"}}
    assert queued[-1].delivered_at is None


def test_generic_and_slack_bodies_are_delivered_once(services: Services, receiver: LoopbackHTTPServer) -> None:
    place(services, stage="twin")
    sender = WebhookSender([f"{receiver.url}/generic", f"slack+{receiver.url}/slack"])
    assert deliver_due(services.db, sender, now=T0 + 1).delivered == 1
    assert deliver_due(services.db, sender, now=T0 + 2).delivered == 0
    generic, slack = sorted(receiver.requests, key=lambda r: r.path)
    assert (generic.path, slack.path) == ("/generic", "/slack")
    assert json.loads(generic.body)["action"] == "start"
    text = json.loads(slack.body)["text"]
    assert text.startswith("Gatekeeper: bot v2 — start by test → twin tier 0")
    assert rows(services, Notification)[0].delivered_at == T0 + 1


def test_a_failing_webhook_is_retried_with_backoff_without_resending_to_others(
        services: Services, receiver: LoopbackHTTPServer) -> None:
    place(services, stage="twin")
    flaky = Flaky()
    with LoopbackHTTPServer(flaky) as bad:
        sender = WebhookSender([receiver.url, bad.url], retries=0)
        assert deliver_due(services.db, sender, now=T0 + 1).failed == 1
        row = rows(services, Notification)[0]
        assert (row.attempts, row.next_attempt_at, row.delivered_at) == (1, T0 + 3, None)
        assert json.loads(row.payload)["pending"] == [url_id(bad.url)]
        assert "HTTP 500" in (row.last_error or "") and "127.0.0.1" in (row.last_error or "")
        assert deliver_due(services.db, sender, now=T0 + 2) == deliver_due(services.db, sender, now=T0 + 2.5)
        flaky.healthy = True
        assert deliver_due(services.db, sender, now=T0 + 3).delivered == 1
        assert len(bad.requests) == 2
    assert len(receiver.requests) == 1


def test_a_dead_webhook_opens_its_breaker_and_gives_up_after_max_attempts(services: Services) -> None:
    place(services, stage="twin")
    sender = WebhookSender([f"http://127.0.0.1:{free_port()}/hook"], retries=0, fail_max=2, timeout_s=1)
    now = T0
    for _ in range(MAX_ATTEMPTS + 2):
        now += 4000
        started = time.monotonic()
        deliver_due(services.db, sender, now=now)
        elapsed = time.monotonic() - started
    row = rows(services, Notification)[0]
    assert (row.attempts, row.delivered_at) == (MAX_ATTEMPTS, None)
    assert "breaker open" in (row.last_error or "")
    assert elapsed < 0.5
