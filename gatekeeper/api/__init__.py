"""The JSON API: blueprints, and the one error handler that renders the SPEC §5 error body."""

from __future__ import annotations

import logging

from flask import Flask, Response, json
from werkzeug.exceptions import HTTPException

from gatekeeper.errors import GatekeeperError

log = logging.getLogger(__name__)


def register_api(app: Flask) -> None:
    """Attach every API blueprint and the error handlers."""
    from gatekeeper.api import agents, runtime, system, tokens
    from gatekeeper.api.alerts import bp as alerts_bp
    from gatekeeper.api.guard import EdgeGuard
    from gatekeeper.api.heartbeat import bp as heartbeat_bp
    from gatekeeper.api.scenario_routes import bp as scenario_bp
    from gatekeeper.api.traces import bp as traces_bp

    app.register_blueprint(system.bp)
    app.register_blueprint(heartbeat_bp)
    app.register_blueprint(agents.bp)
    app.register_blueprint(alerts_bp)
    app.register_blueprint(tokens.bp)
    app.register_blueprint(traces_bp)  # GET /v1/sessions/<id>: the session trace
    app.register_blueprint(scenario_bp)  # POST /v1/sessions/<id>/scenario: a trace becomes a scenario
    runtime.register(app)  # sessions, decisions, outcomes, approvals, /metrics
    app.register_error_handler(GatekeeperError, _gatekeeper_error)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(Exception, _unexpected_error)
    app.wsgi_app = EdgeGuard(app.wsgi_app,  # type: ignore[method-assign]
                             max_body_bytes=app.config["GATEKEEPER_SETTINGS"].max_body_bytes)


def _gatekeeper_error(exc: GatekeeperError) -> tuple[dict[str, object], int]:
    if exc.status >= 500:
        log.error("request failed: %s", exc.message)
    return exc.to_body(), exc.status


def _http_error(exc: HTTPException) -> Response:
    code = (exc.name or "error").lower().replace(" ", "_")
    body = json.dumps({"error": {"code": code, "message": exc.description or exc.name}})
    # Keep the exception's own headers but its HTML type: a 405 must say which methods are allowed.
    headers = [(k, v) for k, v in exc.get_headers() if k.lower() != "content-type"]
    return Response(body + "\n", status=exc.code or 500, headers=headers, mimetype="application/json")


def _unexpected_error(exc: Exception) -> tuple[dict[str, object], int]:
    log.exception("unexpected error")
    return {"error": {"code": "internal", "message": "internal error; see the server log"}}, 500
