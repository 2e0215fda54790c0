"""Gatekeeper: a staged-rollout gatekeeper for AI agents."""

from __future__ import annotations

from typing import Any

from flask import Flask


def create_app(overrides: dict[str, Any] | None = None) -> Flask:
    """Build the Flask app: settings from the environment (plus overrides), database, policies, routes."""
    from gatekeeper.api import register_api
    from gatekeeper.config import Settings
    from gatekeeper.services import Services
    from gatekeeper.web import register_web

    settings = Settings.from_env().with_overrides(overrides)
    app = Flask(__name__)
    app.config.update(GATEKEEPER_SETTINGS=settings, SECRET_KEY=settings.secret_key,
                      MAX_CONTENT_LENGTH=settings.max_body_bytes)
    app.extensions["gatekeeper"] = Services.build(settings)
    register_api(app)
    register_web(app)
    return app
