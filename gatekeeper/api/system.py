"""Liveness, readiness and the OpenAPI document."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, current_app

from gatekeeper.api.auth import Caller
from gatekeeper.api.routing import endpoint, openapi_document
from gatekeeper.api.schemas import Health
from gatekeeper.scheduler_status import read_health
from gatekeeper.server_warnings import policy_warnings, scheduler_warning
from gatekeeper.services import services

bp = Blueprint("system", __name__)


class Readiness(Health):
    """Readiness, with what a person should act on though the server is ready (scheduler, policies)."""

    warnings: list[str] = []


@endpoint(bp, "/healthz", methods=["GET"], roles=(), response=Health)
def healthz(*, caller: Caller) -> Health:
    """Answer while the process is alive."""
    return Health(status="ok")


@endpoint(bp, "/readyz", methods=["GET"], roles=(), response=Readiness)
def readyz(*, caller: Caller) -> tuple[Readiness, int]:
    """Answer 200 when the database answers, else 503; say what else needs a person (scheduler, policies)."""
    svc = services()
    ready = svc.db.is_ready()
    snapshot = svc.policies.snapshot()
    broken = policy_warnings(snapshot)
    checks = {"database": "ok" if ready else "unavailable",
              "policies": f"{len(snapshot.by_name)} loaded"
                          + (f"; {len(broken)} file{'s' if len(broken) != 1 else ''} failed to load" if broken else "")}
    health = read_health(svc.db, now=services().clock()) if ready else None
    if health is not None:
        checks["scheduler"] = health.summary
    warnings = ([scheduler_warning(health)] if health is not None and not health.healthy else []) + broken
    return (Readiness(status="ready" if ready else "not ready", checks=checks, warnings=[w.line for w in warnings]),
            200 if ready else 503)


@endpoint(bp, "/openapi.json", methods=["GET"], roles=())
def openapi(*, caller: Caller) -> dict[str, Any]:
    """Describe every route, generated from the request and response models."""
    return openapi_document(current_app._get_current_object())  # type: ignore[attr-defined]
