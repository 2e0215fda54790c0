"""The WSGI entry point for gunicorn: `gunicorn gatekeeper.wsgi:app`.

The app is built on first access of `app`, not at import, so importing this module creates
nothing; gunicorn's `getattr(module, "app")` builds it in each worker, after the fork.
"""

from __future__ import annotations

import threading
from typing import Any

from flask import Flask

_built: Flask | None = None
_lock = threading.Lock()


def build() -> Flask:
    """Return this process's app, creating it from the GATEKEEPER_* environment once."""
    global _built
    with _lock:
        if _built is None:
            from gatekeeper import create_app

            _built = create_app()
        return _built


def __getattr__(name: str) -> Any:
    if name == "app":
        return build()
    raise AttributeError(name)
