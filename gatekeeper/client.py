"""The server package's own synchronous client: sessions, decisions, outcomes, and a guard around tool calls.

Agent developers use the SDK instead: `gatekeeper_client` (the `gatekeeper-client` distribution in
client/), which installs without the server, is sync and async, and waits for approvals. This module stays
for the demo's simulated fleet and the walkthrough's `agent.py`, which run where the server is installed.

    gk = Gatekeeper("http://127.0.0.1:8000", token)
    session = gk.start_session("support-bot", session_key=conversation_id)

    @session.guarded_tool("send_email", cost=0.01)
    def send_email(to: str, body: str) -> str: ...

    with session.guarded_tool("refund_payment", cost=0.05, preview="refund $20 to #123") as call:
        call.actual_cost = do_refund()

The guard asks before calling, runs the tool only on `allow`, and reports the outcome
(`error` when the tool raised) with its latency. When the gatekeeper cannot be reached, it
fails closed for tools not declared `read_only` (and open for read-only ones), unless the
client was built with `fail_closed=False`.

Exceptions: the server's errors arrive as the classes of `gatekeeper.errors`, by code:

    GatekeeperError                 any error the server (or the SDK) reports
    ├── BadRequest, PayloadTooLarge, Unauthorized, Forbidden, NotFound, Conflict, ...
    └── Unavailable                 503 from the server
        └── Unreachable             no answer: connection refused, reset or timed out
    NotExecuted                     a guarded tool call did not run
    ├── Shadowed                    verdict shadow: recorded as what the agent would have done
    ├── Denied                      verdict deny; `.reason` says why
    └── ApprovalRequired            a person must approve; `.approval_id`, then decide again
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from types import TracebackType
from typing import Any, TypeVar

import requests

from gatekeeper.errors import ERRORS_BY_CODE, GatekeeperError, Unavailable

log = logging.getLogger(__name__)
T = TypeVar("T")
_BY_STATUS = {cls.status: cls for cls in reversed(ERRORS_BY_CODE.values())}


class Unreachable(Unavailable):
    code = "unreachable"


@dataclass(frozen=True)
class Decision:
    """The server's verdict on one tool call; `offline` when it was made without the server."""

    decision_id: str | None
    verdict: str
    reason: str = ""
    remaining_tool_calls: int | None = None
    remaining_spend: float | None = None
    approval_id: str | None = None
    offline: bool = False
    message: str = ""  # one plain sentence an agent can hand back to its model

    @property
    def allowed(self) -> bool:
        """Return whether the tool may run."""
        return self.verdict == "allow"


class NotExecuted(Exception):  # noqa: N818 - it names what happened to the call, not a failure of ours
    """A guarded tool call did not run; `.decision` holds the verdict."""

    def __init__(self, decision: Decision, tool: str) -> None:
        super().__init__(f"{tool}: {decision.verdict}" + (f" ({decision.reason})" if decision.reason else ""))
        self.decision = decision
        self.tool = tool
        self.reason = decision.reason


class Shadowed(NotExecuted):
    pass


class Denied(NotExecuted):
    pass


class ApprovalRequired(NotExecuted):
    @property
    def approval_id(self) -> str | None:
        """Return the approval to wait for before deciding again."""
        return self.decision.approval_id


_NOT_EXECUTED: dict[str, type[NotExecuted]] = {"shadow": Shadowed, "deny": Denied,
                                               "approval_required": ApprovalRequired}


class Gatekeeper:
    """A client of one gatekeeper server, authenticated by an agent token."""

    def __init__(self, url: str, token: str, *, timeout: float = 2.0, fail_closed: bool = True,
                 http: requests.Session | None = None) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.fail_closed = fail_closed
        self.http = http or requests.Session()
        self.http.headers["Authorization"] = f"Bearer {token}"

    def start_session(self, agent: str, *, session_key: str | None = None, environment: str = "live",
                      scenario: str | None = None, twin_snapshot_at: datetime | str | None = None,
                      arm: str | None = None) -> Session:
        """Start a session; the server assigns the arm and fixes the caps."""
        snapshot = twin_snapshot_at.isoformat() if isinstance(twin_snapshot_at, datetime) else twin_snapshot_at
        body = {"agent": agent, "session_key": session_key, "environment": environment, "scenario": scenario,
                "twin_snapshot_at": snapshot, "arm": arm}
        return Session.from_answer(self, self.post("/v1/sessions", {k: v for k, v in body.items() if v is not None}))

    def session(self, session_id: str, *, agent: str = "", environment: str = "live") -> Session:
        """Return a handle on an existing session, such as the mirror a shadowed session names."""
        return Session(self, session_id, agent=agent, version="", arm="candidate", stage=None,
                       environment=environment)

    def approval(self, approval_id: str) -> dict[str, Any]:
        """Return an approval, with its `state`: pending, approved, rejected, expired or cancelled."""
        return self.request("GET", f"/v1/approvals/{approval_id}")

    def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST a JSON body and return the JSON answer, raising the server's error as an exception."""
        return self.request("POST", path, body)

    def request(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        """Send one request; raise Unreachable when no answer comes, or the server's error."""
        try:
            answer = self.http.request(method, self.url + path, json=body, timeout=self.timeout)
        except requests.RequestException as exc:
            raise Unreachable(f"gatekeeper at {self.url} unreachable: {exc}") from exc
        if answer.status_code >= 400:
            raise _error(answer)
        found: dict[str, Any] = answer.json()
        return found


def _error(answer: requests.Response) -> GatekeeperError:
    try:
        error = answer.json()["error"]
        code, message, field_ = error.get("code"), error.get("message", ""), error.get("field")
    except (ValueError, KeyError, TypeError, AttributeError):
        code, message, field_ = None, answer.text[:500], None
    cls = ERRORS_BY_CODE.get(code or "") or _BY_STATUS.get(answer.status_code, GatekeeperError)
    return cls(f"{answer.status_code}: {message}", field=field_)


@dataclass
class Session:
    """One task or conversation of an agent, as the server assigned it."""

    client: Gatekeeper
    session_id: str
    agent: str
    version: str
    arm: str
    stage: str | None
    environment: str
    caps: dict[str, Any] = field(default_factory=dict)
    mirror: dict[str, Any] | None = None

    @classmethod
    def from_answer(cls, client: Gatekeeper, answer: dict[str, Any]) -> Session:
        """Build a session from the answer of POST /v1/sessions."""
        return cls(client, answer["session_id"], agent=answer["agent"], version=answer["version"],
                   arm=answer["arm"], stage=answer.get("stage"), environment=answer["environment"],
                   caps=answer.get("caps", {}), mirror=answer.get("mirror"))

    def mirror_session(self) -> Session | None:
        """Return the candidate's mirror of this session (shadow), to run the candidate with."""
        if self.mirror is None:
            return None
        mirror = self.client.session(self.mirror["session_id"], agent=self.agent)
        mirror.version, mirror.stage = self.mirror["version"], "shadow"
        return mirror

    def decide(self, tool: str, cost: float, *, preview: str | None = None, approval_id: str | None = None,
               arguments: dict[str, Any] | None = None, request_id: str | None = None) -> Decision:
        """Ask for the verdict on one tool call; the cost (dollars) is reserved when it is allowed.

        `arguments` binds an approval to exactly this call; sending the same `request_id` again (after a
        timeout, say) returns the first answer and reserves nothing twice.
        """
        body = {"session_id": self.session_id, "tool": tool, "cost": cost, "preview": preview,
                "approval_id": approval_id, "arguments": arguments, "request_id": request_id}
        answer = self.client.post("/v1/decisions", {k: v for k, v in body.items() if v is not None})
        remaining = answer.get("remaining", {})
        return Decision(answer["decision_id"], answer["verdict"], answer.get("reason", ""),
                        remaining.get("tool_calls"), remaining.get("spend"), answer.get("approval_id"),
                        message=answer.get("message", ""))

    def report(self, decision: Decision | str, status: str = "ok", *, actual_cost: float | None = None,
               latency_ms: float | None = None) -> dict[str, Any]:
        """Report an allowed call's outcome and actual cost; repeating the same report is harmless."""
        decision_id = decision.decision_id if isinstance(decision, Decision) else decision
        body = {"status": status, "actual_cost": actual_cost, "latency_ms": latency_ms}
        return self.client.post(f"/v1/decisions/{decision_id}/outcome",
                                {k: v for k, v in body.items() if v is not None})

    def end(self, status: str = "ok", *, passed: bool | None = None) -> dict[str, Any]:
        """End the session and return its summary."""
        body: dict[str, Any] = {"status": status} if passed is None else {"status": status, "passed": passed}
        return self.client.post(f"/v1/sessions/{self.session_id}/end", body)

    def guarded_tool(self, tool: str, *, cost: float, read_only: bool = False,
                     preview: str | Callable[..., str] | None = None,
                     actual_cost: Callable[[Any], float] | None = None) -> Guard:
        """Return a guard for `tool`: a decorator, or a context manager around one call."""
        return Guard(self, tool, cost=cost, read_only=read_only, preview=preview, actual_cost=actual_cost)


def guarded_tool(session: Session, tool: str, *, cost: float, read_only: bool = False,
                 preview: str | Callable[..., str] | None = None,
                 actual_cost: Callable[[Any], float] | None = None) -> Guard:
    """Return a guard for `tool` in `session` (the same as `session.guarded_tool(...)`)."""
    return session.guarded_tool(tool, cost=cost, read_only=read_only, preview=preview, actual_cost=actual_cost)


@dataclass
class GuardedCall:
    """One call inside `with guard as call:`; set `actual_cost` before leaving if it differs."""

    decision: Decision
    actual_cost: float | None = None
    started: float = field(default_factory=time.perf_counter)


class Guard:
    """Ask before calling, skip on shadow/deny/approval, report outcome and latency after."""

    def __init__(self, session: Session, tool: str, *, cost: float, read_only: bool,
                 preview: str | Callable[..., str] | None, actual_cost: Callable[[Any], float] | None) -> None:
        self.session, self.tool, self.cost, self.read_only = session, tool, cost, read_only
        self.preview, self.actual_cost = preview, actual_cost
        self._active: list[GuardedCall] = []

    def __call__(self, fn: Callable[..., T]) -> Callable[..., T]:
        @functools.wraps(fn)
        def guarded(*args: Any, **kwargs: Any) -> T:
            with self._open(self._preview(args, kwargs)) as call:
                result = fn(*args, **kwargs)
                if self.actual_cost is not None:
                    call.actual_cost = self.actual_cost(result)
                return result

        return guarded

    def __enter__(self) -> GuardedCall:
        call = self.begin(self._preview((), {}))
        self._active.append(call)
        return call

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.finish(self._active.pop(), failed=error is not None)

    def _open(self, preview: str | None) -> _Scope:
        return _Scope(self, preview)

    def begin(self, preview: str | None) -> GuardedCall:
        """Ask for the verdict; raise NotExecuted (or Unreachable, failing closed) unless the call may run."""
        try:
            decision = self.session.decide(self.tool, self.cost, preview=preview)
        except Unavailable:
            if self.session.client.fail_closed and not self.read_only:
                raise
            log.warning("gatekeeper unreachable; running %s anyway (fails open)", self.tool)
            decision = Decision(None, "allow", "gatekeeper_unreachable", offline=True)
        if not decision.allowed:
            raise _NOT_EXECUTED.get(decision.verdict, Denied)(decision, self.tool)
        return GuardedCall(decision)

    def finish(self, call: GuardedCall, *, failed: bool) -> None:
        """Report the call's outcome and latency; a failed report is logged, never raised."""
        if call.decision.offline:
            return
        latency_ms = (time.perf_counter() - call.started) * 1000
        try:
            self.session.report(call.decision, "error" if failed else "ok", actual_cost=call.actual_cost,
                                latency_ms=round(latency_ms, 3))
        except GatekeeperError as exc:
            log.warning("could not report the outcome of %s: %s", self.tool, exc)

    def _preview(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str | None:
        return self.preview(*args, **kwargs) if callable(self.preview) else self.preview


class _Scope:
    """The context of one decorated call (a Guard may be decorating many calls at once)."""

    def __init__(self, guard: Guard, preview: str | None) -> None:
        self.guard, self.preview = guard, preview

    def __enter__(self) -> GuardedCall:
        self.call = self.guard.begin(self.preview)
        return self.call

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.guard.finish(self.call, failed=error is not None)
