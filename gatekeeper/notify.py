"""Transition notifications: an outbox filled in the transition's transaction, delivered later.

`enqueue` runs inside the transaction that records a transition, so a notification exists
exactly when its transition committed. Nothing is sent there: a slow or dead webhook never
blocks a transition, and never touches the decision path. The scheduler process calls
`deliver_due` on every tick; it posts each pending notification to every URL of
GATEKEEPER_WEBHOOK_URLS with requests (a couple of quick retries), then backs off
exponentially between ticks, and keeps each URL behind its own pybreaker breaker so a dead
receiver is skipped at once instead of costing a timeout per notification.

Bodies: the generic JSON event of `event_body`, or a Slack-compatible `{"text", "blocks"}` for
URLs on hooks.slack.com or written with a `slack+` prefix (`slack+https://chat.example/hook`).
A URL that already took a notification is not sent it again when another URL needs a retry.
Webhook URLs are secrets (a Slack URL is its own credential), so logs and the outbox name a URL
by its host only, and remember which URLs still need a notification by a hash.

    DeliveryError           a URL refused, failed or timed out (or its breaker is open)
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import pybreaker
import requests
from requests.adapters import HTTPAdapter
from sqlmodel import Session
from urllib3.util.retry import Retry

from gatekeeper.store import outbox
from gatekeeper.store.db import Database
from gatekeeper.store.models import Agent, Notification, Rollout, Transition

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 10
BACKOFF_BASE_S = 2.0
BACKOFF_MAX_S = 3600.0


class DeliveryError(Exception):
    """A webhook did not take the notification."""


def enqueue(db: Session, entry: Transition, *, agent: Agent, rollout: Rollout) -> Notification:
    """Add the transition's notification to the outbox, in the caller's transaction."""
    payload = {"event": event_body(entry, agent=agent, rollout=rollout), "pending": None}
    row = Notification(transition_id=entry.id or 0, payload=json.dumps(payload, sort_keys=True),
                       next_attempt_at=entry.at)
    db.add(row)
    return row


def event_body(entry: Transition, *, agent: Agent, rollout: Rollout) -> dict[str, Any]:
    """Return the generic JSON event of a transition."""
    before = None if entry.from_stage is None else {
        "stage": entry.from_stage, "tier": entry.from_tier, "state": entry.from_state}
    return {"event": "rollout.transition", "agent": agent.name, "rollout_id": entry.rollout_id,
            "transition_id": entry.id, "action": entry.action, "actor": entry.actor, "reason": entry.reason,
            "at": datetime.fromtimestamp(entry.at, tz=UTC).isoformat(), "from": before,
            "to": {"stage": entry.to_stage, "tier": entry.to_tier, "state": entry.to_state},
            "traffic_percent": entry.traffic_percent, "candidate_version": rollout.candidate_version,
            "stable_version": agent.stable_version, "policy_revision": entry.policy_revision,
            "metrics": json.loads(entry.metrics or "{}")}


def slack_body(event: Mapping[str, Any]) -> dict[str, Any]:
    """Return a Slack-compatible body for an event."""
    to = event["to"]
    where = f"{to['stage']} tier {to['tier']} ({event['traffic_percent']:g}% traffic), {to['state']}"
    text = (f"Gatekeeper: {event['agent']} {event['candidate_version']} — {event['action']} by "
            f"{event['actor']} → {where}")
    detail = event.get("reason") or "no reason given"
    return {"text": text, "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": f"*{text}*"}},
                                     {"type": "context", "elements": [{"type": "mrkdwn", "text": detail}]}]}


def backoff_s(attempts: int) -> float:
    """Return the wait before the next try after `attempts` failed ones."""
    return float(min(BACKOFF_MAX_S, BACKOFF_BASE_S * 2 ** max(0, attempts - 1)))


def url_id(url: str) -> str:
    """Return the short hash the outbox remembers a URL by."""
    return hashlib.sha256(url.encode()).hexdigest()[:12]


def url_label(url: str) -> str:
    """Return a URL without its path and query, fit for logs."""
    parts = urlsplit(url.removeprefix("slack+"))
    return f"{parts.scheme}://{parts.hostname}{f':{parts.port}' if parts.port else ''}/…"


def is_slack(url: str) -> bool:
    """Return whether a URL gets the Slack body."""
    return url.startswith("slack+") or urlsplit(url).hostname == "hooks.slack.com"


class WebhookSender:
    """Post events to webhook URLs, each behind its own breaker."""

    def __init__(self, urls: Sequence[str], *, timeout_s: float = 5.0, retries: int = 2, fail_max: int = 5,
                 reset_timeout_s: float = 60.0) -> None:
        self.urls = tuple(urls)
        self.timeout_s = timeout_s
        self._http = requests.Session()
        retry = Retry(total=retries, backoff_factor=0.2, status_forcelist=(429, 500, 502, 503, 504),
                      allowed_methods=frozenset({"POST"}), raise_on_status=False)
        self._http.mount("http://", HTTPAdapter(max_retries=retry))
        self._http.mount("https://", HTTPAdapter(max_retries=retry))
        self.breakers = {url: pybreaker.CircuitBreaker(fail_max=fail_max, reset_timeout=reset_timeout_s,
                                                       name=url) for url in self.urls}

    def send(self, url: str, event: Mapping[str, Any]) -> None:
        """Deliver one event to one URL, or raise DeliveryError."""
        body = slack_body(event) if is_slack(url) else dict(event)
        try:
            self.breakers[url].call(self._post, url.removeprefix("slack+"), body)
        except pybreaker.CircuitBreakerError:
            raise DeliveryError("breaker open after repeated failures") from None
        except requests.RequestException as exc:
            raise DeliveryError(type(exc).__name__ if url in str(exc) else f"{type(exc).__name__}: {exc}"[:200]
                                ) from None

    def _post(self, url: str, body: Mapping[str, Any]) -> None:
        response = self._http.post(url, json=body, timeout=self.timeout_s)
        if response.status_code >= 300:
            raise requests.HTTPError(f"HTTP {response.status_code}", response=response)


@dataclass(frozen=True)
class DeliveryStats:
    """What one delivery pass did."""

    delivered: int = 0
    failed: int = 0


def deliver_due(database: Database, sender: WebhookSender, *, now: float, limit: int = 100) -> DeliveryStats:
    """Send every notification that is due; record success, or the error and the next try."""
    delivered = failed = 0
    for row in _due(database, now=now, limit=limit):
        payload = json.loads(row.payload)
        errors = _send_all(sender, payload["event"], payload.get("pending"))
        _record_attempt(database, row.id or 0, payload, errors, now=now)
        delivered, failed = delivered + (not errors), failed + bool(errors)
    return DeliveryStats(delivered, failed)


def _due(database: Database, *, now: float, limit: int) -> list[Notification]:
    with database.reading() as db:
        found = outbox.due_notifications(now=now, max_attempts=MAX_ATTEMPTS, limit=limit, db=db)
        db.expunge_all()
        return found


def _send_all(sender: WebhookSender, event: Mapping[str, Any], pending: Sequence[str] | None) -> dict[str, str]:
    errors = {}
    # A URL removed from the settings since the first try is simply no longer pending.
    for url in [u for u in sender.urls if pending is None or url_id(u) in pending]:
        try:
            sender.send(url, event)
        except DeliveryError as exc:
            errors[url] = str(exc)
            log.warning("notification of transition %s to %s failed: %s", event.get("transition_id"),
                        url_label(url), exc)
    return errors


def _record_attempt(database: Database, row_id: int, payload: dict[str, Any], errors: Mapping[str, str], *,
                    now: float) -> None:
    with database.transaction() as db:
        row = outbox.notification(row_id, db=db)
        if row is None:
            return
        if not errors:
            row.delivered_at, row.last_error = now, None
        else:
            row.attempts += 1
            row.next_attempt_at = now + backoff_s(row.attempts)
            row.last_error = "; ".join(f"{url_label(url)}: {error}" for url, error in errors.items())[:1000]
            row.payload = json.dumps({**payload, "pending": [url_id(url) for url in errors]}, sort_keys=True)
        db.add(row)
