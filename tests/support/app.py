"""The repository's paths and the way into an app's services, for every test."""

from __future__ import annotations

from pathlib import Path

from flask import Flask

from gatekeeper.services import Services

REPO = Path(__file__).resolve().parents[2]
POLICIES = REPO / "policies"


def svc(app: Flask) -> Services:
    """Return an app's services."""
    found: Services = app.extensions["gatekeeper"]
    return found
