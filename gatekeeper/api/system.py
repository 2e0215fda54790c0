"""Liveness, readiness and the OpenAPI document."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, current_app

from gatekeeper.api.auth import Caller
from gatekeeper.api.routing import endpoint, openapi_document
from gatekeeper.api.schemas import Health
from gatekeeper.services import services

bp = Blueprint("system", __name__)


@endpoint(bp, "/healthz", methods=["GET"], roles=(), response=Health)
def healthz(*, caller: Caller) -> Health:
    """Answer while the process is alive."""
    return Health(status="ok")


@endpoint(bp, "/readyz", methods=["GET"], roles=(), response=Health)
def readyz(*, caller: Caller) -> tuple[Health, int]:
    """Answer 200 when the database answers and policies are loaded, else 503."""
    svc = services()
    checks = {"database": "ok" if svc.db.is_ready() else "unavailable",
              "policies": f"{len(svc.policies.snapshot().by_name)} loaded"}
    ready = checks["database"] == "ok"
    return Health(status="ready" if ready else "not ready", checks=checks), 200 if ready else 503


@endpoint(bp, "/openapi.json", methods=["GET"], roles=())
def openapi(*, caller: Caller) -> dict[str, Any]:
    """Describe every route, generated from the request and response models."""
    return openapi_document(current_app._get_current_object())  # type: ignore[attr-defined]
