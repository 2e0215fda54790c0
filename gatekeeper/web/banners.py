"""Banners on every dashboard page: no scheduler is ticking, or a policy file failed to load.

They are rendered into each page and refreshed with it (`/partials/banners`), so a banner goes
away by itself once its cause clears, e.g. when a scheduler starts.
"""

from __future__ import annotations

import re
from typing import Any

from flask import Blueprint, render_template
from flask.typing import ResponseReturnValue
from markupsafe import Markup, escape

from gatekeeper.server_warnings import ServerWarning, current_warnings
from gatekeeper.services import services
from gatekeeper.web.security import current_user

bp = Blueprint("banners", __name__)
CODE_SPAN = re.compile(r"`([^`]+)`")


@bp.get("/partials/banners")
def partial() -> ResponseReturnValue:
    """Return the banners alone, for the pages' auto-refresh."""
    return render_template("web/_banners.html")


@bp.app_context_processor
def _banner_globals() -> dict[str, Any]:
    return {"server_warnings": server_warnings}


def server_warnings() -> list[ServerWarning]:
    """Return the warnings a signed-in person sees now (none before sign-in)."""
    if current_user() is None:
        return []
    return current_warnings(services(), now=services().clock())


@bp.app_template_filter("code_spans")
def code_spans(text: str) -> Markup:
    """Escape `text` and show its `backquoted` commands as code."""
    return Markup(CODE_SPAN.sub(r"<code>\1</code>", str(escape(text))))
