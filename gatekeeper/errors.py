"""The Gatekeeper error tree. Each class knows its HTTP status and error code.

    GatekeeperError                 500 internal
    ├── ConfigError                 500 config_error      (bad settings at start)
    ├── BadRequest                  400 bad_request       (malformed body, wrong type, unknown field)
    │   └── PayloadTooLarge         413 payload_too_large
    ├── Unauthorized                401 unauthorized      (missing or unknown token)
    ├── Forbidden                   403 forbidden         (role or agent scope does not allow it)
    ├── NotFound                    404 not_found
    ├── Conflict                    409 conflict          (state does not allow it)
    │   └── IllegalTransition       409 illegal_transition
    └── Unavailable                 503 unavailable       (database or metrics source down)

The API's error handler turns any of them into
`{"error": {"code": ..., "message": ..., "field": ...}}`; the SDK raises the same classes.
"""

from __future__ import annotations

from typing import Any


class GatekeeperError(Exception):
    """Base of every error Gatekeeper raises on purpose."""

    status = 500
    code = "internal"

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field

    def to_body(self) -> dict[str, Any]:
        """Return the JSON error body of SPEC §5."""
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.field is not None:
            error["field"] = self.field
        return {"error": error}


class ConfigError(GatekeeperError):
    code = "config_error"


class BadRequest(GatekeeperError):
    status = 400
    code = "bad_request"


class PayloadTooLarge(BadRequest):
    status = 413
    code = "payload_too_large"


class Unauthorized(GatekeeperError):
    status = 401
    code = "unauthorized"


class Forbidden(GatekeeperError):
    status = 403
    code = "forbidden"


class NotFound(GatekeeperError):
    status = 404
    code = "not_found"


class Conflict(GatekeeperError):
    status = 409
    code = "conflict"


class IllegalTransition(Conflict):
    code = "illegal_transition"


class Unavailable(GatekeeperError):
    status = 503
    code = "unavailable"


ERRORS_BY_CODE: dict[str, type[GatekeeperError]] = {
    cls.code: cls
    for cls in (GatekeeperError, ConfigError, BadRequest, PayloadTooLarge, Unauthorized, Forbidden,
                NotFound, Conflict, IllegalTransition, Unavailable)
}
