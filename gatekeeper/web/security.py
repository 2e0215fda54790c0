"""Who is signed in, CSRF tokens, role checks, HTML error pages and security headers.

The signed-in user's id lives in Flask's signed cookie (HttpOnly, SameSite=Lax), signed
with one key for every worker and replica: GATEKEEPER_SECRET_KEY, else a key made once and kept
in the database (the first process to need it makes it; concurrent first starts agree on one).
the user row is read again on every request so a deleted user or a changed role takes
effect at once. Every POST must carry the cookie's CSRF token (a form field or the
X-CSRF-Token header): SameSite alone leaves same-site subdomains and old browsers open.
"""

from __future__ import annotations

import hmac
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from functools import wraps
from typing import Any, TypeVar, cast

from flask import Blueprint, Flask, g, redirect, render_template, request, url_for
from flask import session as cookie  # Flask's signed cookie: not an agent's session, not a unit of work
from flask.sessions import SecureCookieSession, SecureCookieSessionInterface
from flask.wrappers import Request
from itsdangerous import URLSafeTimedSerializer
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from werkzeug.exceptions import HTTPException
from werkzeug.wrappers import Response

from gatekeeper.errors import BadRequest, Forbidden, GatekeeperError
from gatekeeper.services import services
from gatekeeper.store.db import Database
from gatekeeper.store.models import User
from gatekeeper.store.signing import add_signing_key, get_signing_key
from gatekeeper.store.tokens import get_user

log = logging.getLogger(__name__)
F = TypeVar("F", bound=Callable[..., Any])
PUBLIC_ENDPOINTS = frozenset({"web.auth.login", "web.static"})
CSRF_FIELD = "csrf_token"
COOKIE_KEY = "dashboard-cookies"
# Pages carry no third-party anything: the policy proves it and blocks injected scripts.
CONTENT_SECURITY_POLICY = ("default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
                           "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")


@dataclass(frozen=True)
class WebUser:
    """The signed-in person, as the pages and the audit trail see them."""

    id: int
    username: str
    role: str

    @property
    def actor(self) -> str:
        """Return how the audit trail names this person."""
        return f"user:{self.username}"

    @property
    def can_act(self) -> bool:
        """Return whether this person may change anything (viewers may not)."""
        return self.role == "release_manager"


class CookieSessionsOnDemand(SecureCookieSessionInterface):
    """Flask's signed cookie session, opened only when the request carries the cookie.

    API calls authenticate with bearer tokens and send no cookie; building the cookie
    serializer for each of them cost more than a tenth of a tool-call decision.
    """

    def open_session(self, app: Flask, request: Request) -> SecureCookieSession | None:
        # The raw header: parsing cookies for a request that sent none costs as much again.
        if self.get_cookie_name(app) not in request.environ.get("HTTP_COOKIE", ""):
            return self.session_class()
        return super().open_session(app, request)

    def get_signing_serializer(self, app: Flask) -> URLSafeTimedSerializer | None:
        # Resolved on first use, not in create_app: the schema may not exist yet when the app is built.
        if not app.secret_key:
            svc = app.extensions["gatekeeper"]
            app.secret_key = shared_signing_key(svc.db, now=svc.clock())
        return super().get_signing_serializer(app)


def shared_signing_key(database: Database, *, now: float, name: str = COOKIE_KEY, attempts: int = 3) -> str:
    """Return the key stored as `name`, making it first if no process has (race-safe)."""
    for _ in range(attempts):
        with database.reading() as db:
            found = get_signing_key(name, db=db)
        if found:
            return found
        try:
            with database.transaction() as db:  # BEGIN IMMEDIATE on SQLite; the primary key on Postgres
                found = get_signing_key(name, db=db)
                if found:
                    return found
                made = secrets.token_hex(32)
                add_signing_key(name, value=made, now=now, db=db)
            return made
        except IntegrityError:  # another process stored its key first: read that one
            continue
    raise RuntimeError(f"could not read or store the signing key {name!r}")


def install(bp: Blueprint) -> None:
    """Guard every dashboard route: sign-in, CSRF, HTML errors, security headers."""
    bp.before_request(_load_user)
    bp.before_request(_check_csrf)
    bp.before_request(_require_sign_in)
    bp.after_request(_secure_headers)
    bp.register_error_handler(GatekeeperError, _gatekeeper_error)
    bp.register_error_handler(HTTPException, _http_error)
    bp.register_error_handler(SQLAlchemyError, _database_error)
    bp.register_error_handler(Exception, _unexpected_error)
    bp.app_context_processor(_template_globals)


def current_user() -> WebUser | None:
    """Return the signed-in user of this request, if any."""
    return cast(WebUser | None, g.get("web_user"))


def sign_in(user: User) -> None:
    """Sign `user` in with a fresh cookie (a new CSRF token too, against session fixation)."""
    cookie.clear()
    cookie.permanent = True
    cookie["user_id"] = user.id
    cookie[CSRF_FIELD] = secrets.token_urlsafe(32)


def sign_out() -> None:
    """Forget the signed-in user."""
    cookie.clear()


def csrf_token() -> str:
    """Return this cookie's CSRF token, creating it on first use."""
    token = cookie.get(CSRF_FIELD)
    if not token:
        token = cookie[CSRF_FIELD] = secrets.token_urlsafe(32)
    return str(token)


def release_manager_required(view: F) -> F:
    """Refuse the view with 403 unless the signed-in user is a release manager."""
    @wraps(view)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        user = current_user()
        if user is None or not user.can_act:
            raise Forbidden("viewers can see everything but act on nothing; ask a release manager")
        return view(*args, **kwargs)
    return cast(F, guarded)


def _load_user() -> None:
    g.now = services().clock()
    user_id = cookie.get("user_id")
    if user_id is None:
        return
    with services().db.reading() as db:
        row = get_user(user_id, db=db)
        found = WebUser(id=row.id or 0, username=row.username, role=row.role) if row else None
    if found is None:
        cookie.clear()
        return
    g.web_user = found


def _check_csrf() -> None:
    if request.method in ("GET", "HEAD", "OPTIONS"):
        return
    sent = request.form.get(CSRF_FIELD) or request.headers.get("X-CSRF-Token") or ""
    expected = cookie.get(CSRF_FIELD) or ""
    if not expected or not hmac.compare_digest(str(sent), str(expected)):
        raise BadRequest("the form's CSRF token is missing or stale; reload the page and try again",
                         field=CSRF_FIELD)


def _require_sign_in() -> Response | None:
    if request.endpoint in PUBLIC_ENDPOINTS or current_user() is not None:
        return None
    if request.method != "GET":
        raise Forbidden("sign in first")
    return redirect(url_for("web.auth.login", next=request.full_path.rstrip("?")))


def _secure_headers(response: Response) -> Response:
    response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("X-Frame-Options", "DENY")
    response.headers.setdefault("Referrer-Policy", "same-origin")
    if request.endpoint != "web.static":
        response.headers.setdefault("Cache-Control", "no-store")
    return response


def _template_globals() -> dict[str, Any]:
    return {"csrf_token": csrf_token, "current_user": current_user, "CSRF_FIELD": CSRF_FIELD}


def _error_page(status: int, title: str, *, message: str) -> tuple[str, int]:
    return render_template("web/error.html", status=status, title=title, message=message), status


def _gatekeeper_error(exc: GatekeeperError) -> tuple[str, int]:
    if exc.status >= 500:
        log.error("dashboard request failed: %s", exc.message)
    return _error_page(exc.status, exc.code.replace("_", " "), message=exc.message)


def _http_error(exc: HTTPException) -> tuple[str, int]:
    return _error_page(exc.code or 500, exc.name, message=exc.description or exc.name)


def _database_error(exc: SQLAlchemyError) -> tuple[str, int]:
    log.error("dashboard cannot read the database: %s", exc)
    return _error_page(503, "database unavailable",
                       message="The database is not answering; this page works again as soon as it does.")


def _unexpected_error(exc: Exception) -> tuple[str, int]:
    log.exception("unexpected dashboard error")
    return _error_page(500, "internal error", message="Something went wrong on the server; see its log.")
