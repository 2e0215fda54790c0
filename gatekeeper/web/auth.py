"""Sign-in and sign-out of dashboard users (created with `gatekeeper user create`).

Failed sign-ins are throttled per username and per address: after GATEKEEPER_SIGNIN_MAX_FAILURES
failures within GATEKEEPER_SIGNIN_WINDOW, sign-in is refused (429) without looking at the
password until the window has passed. The failures live in the database, so every worker and
replica counts the same ones.
"""

from __future__ import annotations

import math

from flask import Blueprint, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue

from gatekeeper.services import Services, services
from gatekeeper.store.sign_ins import clear_failures, recent_failures, record_failure
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
    username = request.form.get("username", "").replace("\x00", "").strip()[:100]  # Postgres refuses NUL
    password = request.form.get("password", "")[:1000]
    svc = services()
    now, address = svc.clock(), request.remote_addr or "unknown"
    if _throttled(svc, username=username, address=address, now=now):
        minutes = math.ceil(svc.settings.signin_window_s / 60)
        message = (f"Too many failed sign-ins for this account or from this address. Wait {minutes} "
                   f"minute{'s' if minutes != 1 else ''} and try again.")
        page = render_template("web/login.html", next=_next_page(), error=message, username=username)
        return page, 429, {"Retry-After": str(math.ceil(svc.settings.signin_window_s))}
    with svc.db.reading() as db:
        user = check_user(username, password, db=db) if username and password else None
        if user is not None:
            sign_in(user)  # inside the block: the read's rollback expires the row
    with svc.db.transaction() as db:
        if user is None:
            record_failure(username=username, address=address, now=now,
                           forget_before=now - svc.settings.signin_window_s, db=db)
        else:
            clear_failures(username=username, db=db)
    if user is None:
        return render_template("web/login.html", next=_next_page(), error="Wrong username or password.",
                               username=username), 401
    return redirect(_next_page(), 303)


def _throttled(svc: Services, *, username: str, address: str, now: float) -> bool:
    with svc.db.reading() as db:
        by_user, by_address = recent_failures(username=username, address=address,
                                              since=now - svc.settings.signin_window_s, db=db)
    return max(by_user, by_address) >= svc.settings.signin_max_failures


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
