"""gunicorn workers whose answers to malformed HTTP are the SPEC §5 JSON error body.

gunicorn refuses a request line over 4 KiB, a header over 8 KiB, a bad chunk size and the like
before the app sees the request, and writes its own HTML page. These workers write
`{"error": {"code", "message", "field"}}` instead, with the same status, except that a transfer
coding gunicorn does not implement is the caller's mistake (400), not a server error (501).
Only the error path changes: a well-formed request costs exactly what it did.
"""

from __future__ import annotations

import json
import socket
from typing import Any

from gunicorn import util
from gunicorn.workers.gthread import ThreadWorker
from gunicorn.workers.sync import SyncWorker

CODES = {400: "bad_request", 403: "forbidden", 414: "uri_too_long", 417: "expectation_failed",
         431: "request_header_fields_too_large", 500: "internal"}
FIELDS = {414: "path", 431: "headers"}


def error_body(status: int, reason: str, message: str) -> str:
    """Return the JSON error body of a refusal made before the app (gunicorn's, or granian's edge)."""
    error: dict[str, Any] = {"code": CODES.get(status, "bad_request"),
                             "message": message or reason or "malformed request"}
    if status in FIELDS:
        error["field"] = FIELDS[status]
    return json.dumps({"error": error}) + "\n"  # ASCII only: safe to send as latin-1


def write_json_error(sock: socket.socket, status: int, reason: str, message: str) -> None:
    """Write a complete HTTP error response carrying the JSON error body, then gunicorn closes."""
    if status == 501:  # UnsupportedTransferCoding: what the client sent, not a server fault
        status, reason = 400, "Bad Request"
    body = error_body(status, reason, message)
    head = (f"HTTP/1.1 {status} {reason}\r\nConnection: close\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n")
    util.write_nonblock(sock, (head + body).encode("latin-1"))


class _JsonErrors:
    def init_process(self) -> None:
        # gunicorn's workers call `util.write_error` for every refusal; this process is ours alone.
        util.write_error = write_json_error
        super().init_process()  # type: ignore[misc]


class JsonSyncWorker(_JsonErrors, SyncWorker):
    """gunicorn's sync worker, answering malformed HTTP with the JSON error body."""


class JsonThreadWorker(_JsonErrors, ThreadWorker):
    """gunicorn's gthread worker, answering malformed HTTP with the JSON error body."""


__all__ = ["JsonSyncWorker", "JsonThreadWorker", "error_body", "write_json_error"]
