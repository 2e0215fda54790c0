"""POST /v1/alerts: the Alertmanager webhook (payload version 4), role `alertmanager`.

The answer is 200 only after every alert's effect is committed; Alertmanager retries on
anything else, and the intake's receipts make those retries harmless. Configure the webhook
receiver with `http_config.authorization` (type Bearer) and keep `max_alerts` low enough that
a notification fits GATEKEEPER_MAX_BODY_BYTES.
"""

from __future__ import annotations

from typing import Annotated, Literal

from flask import Blueprint
from pydantic import BaseModel, ConfigDict, Field

from gatekeeper import alerts
from gatekeeper.api.auth import Caller
from gatekeeper.api.fields import ANNOTATION_MAX, INT_MAX, LABEL_NAME_MAX, LABEL_VALUE_MAX, SafeStr
from gatekeeper.api.routing import endpoint
from gatekeeper.services import services

bp = Blueprint("alerts", __name__)
LabelName = Annotated[SafeStr, Field(min_length=1, max_length=LABEL_NAME_MAX)]
LabelValue = Annotated[SafeStr, Field(max_length=LABEL_VALUE_MAX)]
AnnotationValue = Annotated[SafeStr, Field(max_length=ANNOTATION_MAX)]


class AlertmanagerAlert(BaseModel):
    """One alert as Alertmanager sends it; fields Gatekeeper does not use are ignored."""

    model_config = ConfigDict(extra="ignore")
    status: Literal["firing", "resolved"]
    labels: dict[LabelName, LabelValue] = Field(max_length=100)
    annotations: dict[LabelName, AnnotationValue] = Field(default_factory=dict, max_length=100)
    startsAt: SafeStr = Field(min_length=1, max_length=60)  # the receipts' starts_at column holds 60
    endsAt: SafeStr | None = Field(default=None, max_length=60)
    generatorURL: SafeStr | None = Field(default=None, max_length=LABEL_VALUE_MAX * 4)
    fingerprint: SafeStr = Field(default="", max_length=100)  # the receipts' fingerprint column holds 100


class AlertmanagerPayload(BaseModel):
    """An Alertmanager webhook notification, payload version 4."""

    model_config = ConfigDict(extra="ignore")
    version: Literal["4"] = Field(description="Alertmanager webhook payload version; only 4 is understood")
    status: SafeStr | None = Field(default=None, max_length=LABEL_NAME_MAX)
    receiver: SafeStr | None = Field(default=None, max_length=LABEL_VALUE_MAX)
    groupKey: SafeStr | None = Field(default=None, max_length=LABEL_VALUE_MAX * 4)
    truncatedAlerts: int = Field(default=0, ge=0, le=INT_MAX)
    alerts: list[AlertmanagerAlert] = Field(max_length=1000)


class AlertResult(BaseModel):
    fingerprint: str
    agent: str | None
    alertname: str
    status: str
    result: str = Field(description="acted, duplicate, refused, resolved, ignored, unknown_agent, no_rollout, "
                                    "other_version")
    transition: str | None = Field(description="the rollout action taken, if any")
    detail: str


class AlertIntake(BaseModel):
    received: int
    results: list[AlertResult]


@endpoint(bp, "/v1/alerts", methods=["POST"], roles=("alertmanager",), body=AlertmanagerPayload,
          response=AlertIntake)
def receive_alerts(*, caller: Caller, body: AlertmanagerPayload) -> AlertIntake:
    """Act on firing alerts labelled `agent`, once per (fingerprint, startsAt); answer after the effects commit."""
    batch = [alerts.Alert(status=a.status, labels=a.labels, starts_at=a.startsAt, fingerprint=a.fingerprint,
                          annotations=a.annotations) for a in body.alerts]
    outcomes = alerts.receive(services(), batch, actor=caller.actor, now=services().clock())
    return AlertIntake(received=len(outcomes), results=[AlertResult(**vars(o)) for o in outcomes])
