"""The release managers' dashboard: server-rendered pages over the same use cases as the API.

Pages live at `/` (overview), `/agents/<name>`, `/approvals`, `/policies`, `/sessions/<id>`
(a session's trace), `/login` and `/logout`. One parent blueprint carries what every page
shares (sign-in, CSRF, the HTML error pages, security headers, templates and static files);
a child blueprint per feature holds the routes.
"""

from __future__ import annotations

from datetime import timedelta

from flask import Blueprint, Flask


def register_web(app: Flask) -> None:
    """Attach the dashboard's blueprints, cookie settings and template filters to the app."""
    from gatekeeper.web import filters, security
    from gatekeeper.web.agents import bp as agents_bp
    from gatekeeper.web.approvals import bp as approvals_bp
    from gatekeeper.web.auth import bp as auth_bp
    from gatekeeper.web.banners import bp as banners_bp
    from gatekeeper.web.policy_page import bp as policies_bp
    from gatekeeper.web.traces import bp as traces_bp

    app.config.update(SESSION_COOKIE_HTTPONLY=True, SESSION_COOKIE_SAMESITE="Lax",
                      SESSION_COOKIE_NAME="gatekeeper_session",
                      PERMANENT_SESSION_LIFETIME=timedelta(hours=12))
    web = Blueprint("web", __name__, template_folder="templates", static_folder="static",
                    static_url_path="/assets")
    security.install(web)
    for child in (auth_bp, agents_bp, approvals_bp, policies_bp, banners_bp, traces_bp):
        web.register_blueprint(child)
    app.register_blueprint(web)
    app.session_interface = security.CookieSessionsOnDemand()
    filters.install(app)
