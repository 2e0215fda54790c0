"""The WSGI entry points: `gunicorn gatekeeper.wsgi:app`, `granian --interface wsgi gatekeeper.wsgi:granian_app`.

The app is built on first access of `app`, not at import, so importing this module creates
nothing; the server's `getattr(module, "app")` builds it in each worker, after the fork.

`granian_app` is the same app behind the limits gunicorn enforces before a request reaches it and
granian does not (a request line over 4 KiB, a header line over 8 KiB, a lower-case method), answered
with the same JSON error body and status as `gatekeeper.api.workers` writes under gunicorn. It also
drops the process environment granian copies into every request's environ: an `HTTP_PROXY` variable
of the server would otherwise reach the app as a `Proxy` header on every request ("httpoxy").
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable
from typing import Any

from flask import Flask

from gatekeeper.api.workers import error_body

REQUEST_LINE_MAX = 4094  # gunicorn's --limit-request-line
HEADER_LINE_MAX = 8190  # gunicorn's --limit-request-field_size
# Keys a request's own environ may carry; any other key granian copied from os.environ is dropped.
_REQUEST_KEYS = ("CONTENT_TYPE", "CONTENT_LENGTH")

_built: Flask | None = None
_granian: Callable[..., Iterable[bytes]] | None = None
_lock = threading.Lock()


def build() -> Flask:
    """Return this process's app, creating it from the GATEKEEPER_* environment once."""
    global _built
    with _lock:
        if _built is None:
            from gatekeeper import create_app

            _built = create_app()
        return _built


def granian_edge(app: Callable[..., Iterable[bytes]]) -> Callable[..., Iterable[bytes]]:
    """Return `app` behind gunicorn's request limits and without the server's environment in environ."""
    leaked = {k: v for k, v in os.environ.items() if k.startswith("HTTP_") or k in _REQUEST_KEYS}

    def edge(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        for key, value in leaked.items():  # usually none; a request's own header always wins over them
            if environ.get(key) == value:
                del environ[key]
        method = environ.get("REQUEST_METHOD", "")
        refused = None
        if method != method.upper():
            refused = (400, "Bad Request", f"Invalid HTTP method: {method[:20]!r}")
        elif (len(method) + len(environ.get("PATH_INFO", "")) + len(environ.get("QUERY_STRING", "")) + 11
              > REQUEST_LINE_MAX):  # after percent-decoding: granian passes no raw request line
            refused = (414, "URI Too Long", f"Request Line is too large (> {REQUEST_LINE_MAX})")
        else:
            for key, value in environ.items():  # "Name: value" is len(key) - 5 + 2 + len(value)
                if key[:5] == "HTTP_" and len(key) + len(value) > HEADER_LINE_MAX + 3:  # slicing: 3x startswith
                    refused = (431, "Request Header Fields Too Large", "limit request headers fields size")
                    break
        if refused is None:
            return app(environ, start_response)
        status, reason, message = refused
        body = error_body(status, reason, message).encode("latin-1")
        start_response(f"{status} {reason}", [("Content-Type", "application/json"),
                                              ("Content-Length", str(len(body))), ("Connection", "close")])
        return [body]

    return edge


def __getattr__(name: str) -> Any:
    global _granian
    if name == "app":
        return build()
    if name == "granian_app":
        app = build()
        with _lock:
            if _granian is None:
                _granian = granian_edge(app)
        return _granian
    raise AttributeError(name)
