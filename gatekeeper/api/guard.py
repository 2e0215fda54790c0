"""Refuse a malformed request before any route sees it: NUL characters and non-UTF-8 bytes.

Runs as WSGI middleware in front of the whole app (API and dashboard alike), so a NUL in a path
segment, a query string, a header or a dashboard form never reaches a database (Postgres refuses
NUL in text, and a 500 would follow), and one that is not UTF-8 is refused instead of being read
with replacement characters. The answer is the SPEC §5 error body, 400. JSON bodies are checked
by their models (gatekeeper/api/fields.py); form bodies, which no model reads whole, here.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import unquote_to_bytes

from gatekeeper.api.routing import read_stream
from gatekeeper.errors import BadRequest, PayloadTooLarge

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class EdgeGuard:
    """WSGI middleware that answers 400 to a request carrying NUL or non-UTF-8 bytes (413 to an oversize form)."""

    def __init__(self, app: WSGIApp, *, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        problem = refusal(environ) or self._form_refusal(environ)
        if problem is None:
            return self.app(environ, start_response)
        body = json.dumps(problem.to_body()).encode() + b"\n"
        reason = "Payload Too Large" if problem.status == 413 else "Bad Request"
        start_response(f"{problem.status} {reason}", [("Content-Type", "application/json"),
                                                         ("Content-Length", str(len(body)))])
        return [body]

    def _form_refusal(self, environ: dict[str, Any]) -> BadRequest | None:
        """Check a form body for NUL and non-UTF-8 bytes, and hand the app the bytes read."""
        kind = environ.get("CONTENT_TYPE", "")
        if kind.startswith("multipart/"):  # no route takes uploads, and its parts would go unchecked
            return BadRequest("send forms as application/x-www-form-urlencoded", field="content-type")
        if not kind.startswith("application/x-www-form-urlencoded"):
            return None
        length = environ.get("CONTENT_LENGTH")
        if length and (not (length.isascii() and length.isdigit()) or int(length) > self.max_body_bytes):
            return None  # the app answers 413 (or 400) for it without reading it
        try:
            raw = read_stream(environ, int(length) if length else None, limit=self.max_body_bytes)
        except BadRequest as exc:
            return exc
        environ["wsgi.input"] = io.BytesIO(raw)
        if len(raw) > self.max_body_bytes:
            return PayloadTooLarge(f"the body is larger than {self.max_body_bytes} bytes")
        environ["CONTENT_LENGTH"] = str(len(raw))
        if not _clean(unquote_to_bytes(raw.replace(b"+", b" "))):
            return BadRequest("a form field is not UTF-8 or carries a NUL character", field="form")
        return None


def refusal(environ: dict[str, Any]) -> BadRequest | None:
    """Return why the request's path, query string or headers are refused, or None."""
    path = environ.get("PATH_INFO", "")
    if not _clean(path.encode("latin-1", "replace")):
        return BadRequest("the path must be UTF-8 without NUL characters", field="path")
    query = environ.get("QUERY_STRING", "")
    if query and not _clean(unquote_to_bytes(query.replace("+", " "))):
        return BadRequest("the query string must be UTF-8 without NUL characters", field="query")
    for key, value in environ.items():
        if key.startswith("HTTP_") and "\x00" in value:
            return BadRequest("a header carries a NUL character", field=key[5:].replace("_", "-").lower())
    return None


def _clean(raw: bytes) -> bool:
    if b"\x00" in raw:
        return False
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


__all__ = ["EdgeGuard", "refusal"]
