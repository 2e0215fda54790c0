"""Alertmanager intake: a firing alert about an agent moves its rollout, once per alert.

An alert acts when it is firing and labelled `agent` (and, when labelled `version` too, only
if that is the agent's candidate). The policy's `alerts.by_severity` (by the `severity`
label) or else `alerts.default` chooses the action:

- rollback: one tier down; the rollout pauses there for a person.
- hold: the rollout is held until the alert resolves; the gate does not lift this hold. A rollout
  the gate already holds is held again by the alert, so the history shows the alert's hold (actor,
  reason, labels) before its release.
- kill: the kill switch: revert per the policy's kill_switch and deny the candidate's calls.

Each alert is keyed by (fingerprint, startsAt). Its receipt is inserted in the same
transaction as its effect, so the repeats Alertmanager sends every repeat_interval, and its
retries after a non-2xx, find the receipt and change nothing; two concurrent deliveries
collide on the receipt's unique key and the loser's effect is rolled back. Resolved alerts
never promote: a resolved alert only lifts the hold its own firing set. Alerts about agents
Gatekeeper does not know are acknowledged with a receipt and logged, so they are not retried.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from gatekeeper.errors import IllegalTransition
from gatekeeper.rollouts import transition
from gatekeeper.services import Services
from gatekeeper.store import alert_receipts, rollout_records
from gatekeeper.store.models import Agent, AlertReceipt, Rollout

log = logging.getLogger(__name__)

ALERT_HOLD_PREFIX = "alert "  # how an alert's transitions read in the audit trail


@dataclass(frozen=True)
class Alert:
    """One alert of an Alertmanager notification (payload version 4)."""

    status: str
    labels: Mapping[str, str]
    starts_at: str
    fingerprint: str = ""
    annotations: Mapping[str, str] = field(default_factory=dict)

    @property
    def key(self) -> str:
        """Return the fingerprint, or one computed from the labels when Alertmanager sent none."""
        if self.fingerprint:
            return self.fingerprint
        return hashlib.sha256(json.dumps(dict(self.labels), sort_keys=True).encode()).hexdigest()[:16]

    @property
    def name(self) -> str:
        return self.labels.get("alertname", "unnamed")

    @property
    def marker(self) -> str:
        """Return the text that ties a hold to this alert instance."""
        return f"[{self.key}]"


@dataclass(frozen=True)
class AlertOutcome:
    """What one alert did: its result code, the transition it made, and why."""

    fingerprint: str
    agent: str | None
    alertname: str
    status: str
    result: str
    transition: str | None = None
    detail: str = ""


def receive(svc: Services, alerts: Sequence[Alert], *, actor: str, now: float) -> list[AlertOutcome]:
    """Act on every alert of a notification, each in its own transaction."""
    return [receive_one(svc, alert, actor=actor, now=now) for alert in alerts]


def receive_one(svc: Services, alert: Alert, *, actor: str, now: float) -> AlertOutcome:
    """Act on one alert: firing ones once per (fingerprint, startsAt), resolved ones lift their hold."""
    agent = alert.labels.get("agent")
    if not agent:
        return _outcome(alert, "ignored", detail="no agent label")
    if alert.status != "firing":
        return _resolve(svc, alert, agent, actor=actor, now=now)
    try:
        return _fire(svc, alert, agent, actor=actor, now=now)
    except IntegrityError:
        return _outcome(alert, "duplicate", detail="another delivery of this alert acted first")


def _fire(svc: Services, alert: Alert, agent_name: str, *, actor: str, now: float) -> AlertOutcome:
    with svc.db.transaction() as db:
        seen = alert_receipts.find_receipt(fingerprint=alert.key, starts_at=alert.starts_at, db=db)
        if seen is not None:
            return _outcome(alert, "duplicate", detail=f"already handled: {seen.action}")
        receipt = AlertReceipt(fingerprint=alert.key, starts_at=alert.starts_at, agent=agent_name[:63],
                               alertname=alert.name[:200], action="pending", received_at=now)
        db.add(receipt)
        db.flush()  # a concurrent delivery of the same alert fails here, before any effect
        outcome = _effect(svc, db, alert, agent_name, actor=actor, now=now)
        receipt.action = outcome.transition or outcome.result
        db.add(receipt)
        return outcome


def _effect(svc: Services, db: Session, alert: Alert, agent_name: str, *, actor: str, now: float
            ) -> AlertOutcome:
    agent = rollout_records.find_agent(agent_name, for_update=True, db=db)
    if agent is None:
        log.warning("alert %s names unknown agent %r; acknowledged, nothing done", alert.name, agent_name)
        return _outcome(alert, "unknown_agent", detail=f"no agent named {agent_name!r}")
    rollout = rollout_records.current_rollout(agent, for_update=True, db=db)
    if rollout is None:
        return _outcome(alert, "no_rollout", detail="the agent has no rollout in progress")
    version = alert.labels.get("version")
    if version and version != rollout.candidate_version:
        return _outcome(alert, "other_version", detail=f"{version} is not the candidate "
                                                       f"{rollout.candidate_version}")
    return _apply(svc, db, agent, rollout, alert, actor=actor, now=now)


def _apply(svc: Services, db: Session, agent: Agent, rollout: Rollout, alert: Alert, *, actor: str,
           now: float) -> AlertOutcome:
    loaded = svc.policies.get(agent.policy)
    action = loaded.policy.alerts.action_for(alert.labels.get("severity"))
    reason = _reason(alert)
    try:
        transition(db, loaded, agent, rollout, action, actor=actor, reason=reason, now=now,
                   metrics=_metrics(alert), held_by="alert", held_by_alert=alert.key)
    except IllegalTransition as exc:
        return _outcome(alert, "refused", detail=f"cannot {action}: {exc.message}")
    return _outcome(alert, "acted", transition=action, detail=reason)


def _resolve(svc: Services, alert: Alert, agent_name: str, *, actor: str, now: float) -> AlertOutcome:
    with svc.db.transaction() as db:
        agent = rollout_records.find_agent(agent_name, for_update=True, db=db)
        rollout = rollout_records.current_rollout(agent, for_update=True, db=db) if agent else None
        if agent is None or rollout is None or not _held_by(rollout, alert):
            return _outcome(alert, "resolved", detail="nothing to lift")
        loaded = svc.policies.get(agent.policy)
        transition(db, loaded, agent, rollout, "release", actor=actor, now=now, metrics=_metrics(alert),
                   reason=f"{ALERT_HOLD_PREFIX}{alert.name} resolved {alert.marker}")
        return _outcome(alert, "resolved", transition="release", detail="the alert's hold is lifted")


def _held_by(rollout: Rollout, alert: Alert) -> bool:
    return rollout.state == "held" and rollout.held_by == "alert" and rollout.held_by_alert == alert.key


def _reason(alert: Alert) -> str:
    severity = alert.labels.get("severity", "no severity")
    summary = alert.annotations.get("summary", "")
    text = f"{ALERT_HOLD_PREFIX}{alert.name} firing ({severity}) {alert.marker}" + (f": {summary}" if summary else "")
    return text[:480]


def _metrics(alert: Alert) -> dict[str, object]:
    return {"alert": {"status": alert.status, "labels": dict(alert.labels), "fingerprint": alert.key,
                      "starts_at": alert.starts_at}}


def _outcome(alert: Alert, result: str, *, transition: str | None = None, detail: str = "") -> AlertOutcome:
    return AlertOutcome(alert.key, alert.labels.get("agent"), alert.name, alert.status, result, transition,
                        detail)
