"""Sign-in and sign-out of dashboard users (created with `gatekeeper user create`)."""

from __future__ import annotations

from flask import Blueprint, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue

from gatekeeper.services import services
from gatekeeper.store.tokens import check_user
from gatekeeper.web.security import current_user, sign_in, sign_out

bp = Blueprint("auth", __name__)


@bp.route("/login", methods=["GET", "POST"])
def login() -> ResponseReturnValue:
    """Show the sign-in form, or check the password and start a session."""
    if request.method == "GET":
        if current_user() is not None:
            return redirect(_next_page())
        return render_template("web/login.html", next=_next_page(), error=None)
    username = request.form.get("username", "").strip()[:100]
    password = request.form.get("password", "")[:1000]
    with services().db.reading() as session:
        user = check_user(session, username, password) if username and password else None
        if user is not None:
            sign_in(user)  # inside the block: the read's rollback expires the row
    if user is None:
        return render_template("web/login.html", next=_next_page(), error="Wrong username or password.",
                               username=username), 401
    return redirect(_next_page(), 303)


@bp.route("/logout", methods=["GET", "POST"])
def logout() -> ResponseReturnValue:
    """Ask to sign out (GET), or sign out (POST, so another site cannot sign you out)."""
    if request.method == "GET":
        return render_template("web/logout.html")
    sign_out()
    return redirect(url_for("web.auth.login"), 303)


def _next_page() -> str:
    wanted = request.values.get("next", "")
    # Only paths on this site: an absolute or protocol-relative URL would be an open redirect.
    if wanted.startswith("/") and not wanted.startswith("//") and "\\" not in wanted:
        return wanted
    return url_for("web.agents.overview")
