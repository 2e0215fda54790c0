"""What the SDK raises.

    GatekeeperError                 any error the server (or the SDK) reports; `.code`, `.status`, `.field`
    ├── BadRequest                  400 (PayloadTooLarge: 413)
    ├── Unauthorized, Forbidden     401, 403
    ├── NotFound, Conflict          404, 409
    └── Unavailable                 503 from the server
        └── Unreachable             no answer: connection refused, reset or timed out
    NotExecuted                     a guarded tool call did not run; `.decision`, `.message`
    ├── Shadowed                    verdict shadow: recorded as what the agent would have done
    ├── Denied                      verdict deny (also: no server, or a 503, for a tool that is not read-only)
    └── NotApproved                 a person rejected the call, or no one approved it in time
    ToolFailure                     a guarded tool call failed for the agent; `.injected` for a rehearsed failure
    ├── ToolError                   the tool returned an error (rehearsed: it was not called)
    └── ToolTimeout                 the tool timed out (also a TimeoutError; rehearsed: it ran, its effect happened)

The codes and statuses are the server's (SPEC §5); this module has no server import, so the SDK installs alone.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gatekeeper_client.models import Decision


class GatekeeperError(Exception):
    """An error the server reported, by its code and status."""

    status = 500
    code = "internal"

    def __init__(self, message: str = "", *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class BadRequest(GatekeeperError):
    status, code = 400, "bad_request"


class PayloadTooLarge(BadRequest):
    status, code = 413, "payload_too_large"


class Unauthorized(GatekeeperError):
    status, code = 401, "unauthorized"


class Forbidden(GatekeeperError):
    status, code = 403, "forbidden"


class NotFound(GatekeeperError):
    status, code = 404, "not_found"


class Conflict(GatekeeperError):
    status, code = 409, "conflict"


class Unavailable(GatekeeperError):
    status, code = 503, "unavailable"


class Unreachable(Unavailable):
    code = "unreachable"


ERRORS_BY_CODE: dict[str, type[GatekeeperError]] = {
    cls.code: cls for cls in (GatekeeperError, BadRequest, PayloadTooLarge, Unauthorized, Forbidden, NotFound,
                              Conflict, Unavailable, Unreachable)}
ERRORS_BY_STATUS: dict[int, type[GatekeeperError]] = {
    cls.status: cls for cls in (BadRequest, PayloadTooLarge, Unauthorized, Forbidden, NotFound, Conflict, Unavailable)}


def error_for(status: int, code: str | None, message: str, field: str | None) -> GatekeeperError:
    """Return the exception of one error answer: by its code, else by its status."""
    cls = ERRORS_BY_CODE.get(code or "") or ERRORS_BY_STATUS.get(status)
    if cls is None:
        cls = BadRequest if 400 <= status < 500 else GatekeeperError
    return cls(f"{status}: {message}", field=field)


class NotExecuted(Exception):  # noqa: N818 - it names what happened to the call, not a failure of ours
    """A guarded tool call did not run; `.decision` holds the verdict and `.message` the plain reason."""

    def __init__(self, decision: Decision, tool: str) -> None:
        super().__init__(decision.message or f"{tool}: {decision.verdict} ({decision.reason})")
        self.decision = decision
        self.tool = tool
        self.reason = decision.reason
        self.message = decision.message


class Shadowed(NotExecuted):
    pass


class Denied(NotExecuted):
    pass


class NotApproved(NotExecuted):
    @property
    def approval_id(self) -> str | None:
        """Return the approval that was rejected, expired, cancelled or not decided in time."""
        return self.decision.approval_id


class ToolFailure(Exception):
    """A guarded tool call failed as the agent sees it; in a twin session the server may inject this (chaos).

    `.injected` is True for a rehearsed failure (stages.twin.chaos); `.decision` is the call's decision.
    """

    def __init__(self, message: str, *, tool: str, decision: Decision | None = None, injected: bool = False) -> None:
        super().__init__(message)
        self.message, self.tool, self.decision, self.injected = message, tool, decision, injected


class ToolError(ToolFailure):
    """The tool returned an error."""


class ToolTimeout(ToolFailure, TimeoutError):
    """No answer in time: the call may or may not have taken effect (ambiguous success)."""
