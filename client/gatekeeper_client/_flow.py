"""Everything the SDK does, once, as generators of effects: the sync and the async client only run them.

A flow yields `Send` (one HTTP request), `Sleep`, `Invoke` (run the tool) or `EnsureStarted` and gets each
effect's result sent back (or its exception thrown in); `drive` and `drive_async` in `_client.py` are the
only code that differs between `Gatekeeper` and `AsyncGatekeeper`, as in httpx's design.
"""

from __future__ import annotations

import functools
import inspect
import json
import logging
import time
import uuid
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

from gatekeeper_client import _chaos
from gatekeeper_client.errors import GatekeeperError, ToolError, ToolTimeout, Unavailable, Unreachable
from gatekeeper_client.models import Decision, Mirror, OnRefusal, offline_decision

log = logging.getLogger("gatekeeper_client")
T = TypeVar("T")
BACKLOG_LIMIT = 256  # offline calls and reports kept for the catch-up; older ones are dropped (and logged)


@dataclass(frozen=True)
class Send:
    """One HTTP request; `retry` when repeating it cannot do anything twice (a request id, an idempotent report)."""

    method: str
    path: str
    body: dict[str, Any] | None = None
    retry: bool = False


@dataclass(frozen=True)
class Sleep:
    seconds: float


@dataclass(frozen=True)
class Invoke:
    fn: Callable[..., Any]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]


@dataclass(frozen=True)
class EnsureStarted:
    """Start the server session if it is not started yet (once, under the session's lock); yields a bool."""


Effect = Send | Sleep | Invoke | EnsureStarted
Flow = Generator[Effect, Any, T]


@dataclass
class Settings:
    """How a client behaves; shared by `Gatekeeper` and `AsyncGatekeeper`."""

    url: str
    timeout: float = 2.0
    retries: int = 2
    read_only_when_unreachable: bool = True
    approval_timeout: float = 60.0
    approval_poll: float = 1.0
    on_refusal: OnRefusal = "raise"
    reconnect_after: float = 1.0


@dataclass
class SessionState:
    """One session as the SDK knows it: started on the server or not yet (lazily, when it can be reached)."""

    settings: Settings
    agent: str
    start_body: dict[str, Any]
    session_id: str | None = None
    version: str | None = None
    arm: str | None = None
    stage: str | None = None
    environment: str = "live"
    caps: dict[str, Any] = field(default_factory=dict)
    mirror: Mirror | None = None
    seed: str | None = None  # a twin session's chaos seed, as the server fixed it
    on_refusal: OnRefusal | None = None
    ended: bool = False
    catching_up: bool = False
    backlog: list[dict[str, Any]] = field(default_factory=list)  # offline calls, replayed on catch-up
    reports: list[Send] = field(default_factory=list)  # outcome reports that found no server


@dataclass(frozen=True)
class ToolSpec:
    """What `guarded(...)` declared about one tool."""

    tool: str
    cost: float | Callable[..., float]
    read_only: bool = False
    preview: str | Callable[..., str] | None = None
    actual_cost: Callable[[Any], float] | None = None
    on_refusal: OnRefusal | None = None
    approval_timeout: float | None = None


def session_body(agent: str, *, session_key: str | None, environment: str, scenario: str | None,
                 twin_snapshot_at: datetime | str | None, seed: str | int | None = None,
                 arm: str | None = None) -> dict[str, Any]:
    """Return the body of POST /v1/sessions."""
    snapshot = twin_snapshot_at.isoformat() if isinstance(twin_snapshot_at, datetime) else twin_snapshot_at
    body = {"agent": agent, "session_key": session_key, "environment": environment, "scenario": scenario,
            "twin_snapshot_at": snapshot, "seed": None if seed is None else str(seed), "arm": arm}
    return {k: v for k, v in body.items() if v is not None}


def start(state: SessionState) -> Flow[None]:
    """Start the server session, then catch up on what happened while the server was unreachable."""
    answer = yield Send("POST", "/v1/sessions", state.start_body)
    state.session_id, state.version, state.arm = answer["session_id"], answer["version"], answer["arm"]
    state.stage, state.environment, state.caps = answer.get("stage"), answer["environment"], answer.get("caps", {})
    mirror = answer.get("mirror")
    state.mirror = Mirror(mirror["session_id"], mirror["version"]) if mirror else None
    state.seed = answer.get("seed")
    yield from catch_up(state)


def catch_up(state: SessionState) -> Flow[None]:
    """Replay the calls made offline (decided again, reported when allowed) and the reports that were held."""
    if state.catching_up:
        return
    state.catching_up = True
    try:
        while state.backlog:
            call = state.backlog.pop(0)
            try:
                decision = yield from decide(state, call["tool"], call["cost"], arguments=call["arguments"],
                                             preview=call["preview"], request_id=call["request_id"])
            except Unavailable:
                state.backlog.insert(0, call)
                return
            except GatekeeperError as exc:
                log.warning("could not replay the offline call of %s: %s", call["tool"], exc)
                continue
            if decision.allowed:
                yield from report(state, decision, call["status"], actual_cost=call["actual_cost"],
                                  latency_ms=call["latency_ms"])
        while state.reports:
            send = state.reports.pop(0)
            try:
                yield send
            except Unavailable:
                state.reports.insert(0, send)
                return
            except GatekeeperError as exc:
                log.warning("could not send a held outcome report: %s", exc)
    finally:
        state.catching_up = False


def decide(state: SessionState, tool: str, cost: float, *, preview: str | None = None,
           arguments: dict[str, Any] | None = None, approval_id: str | None = None,
           request_id: str | None = None) -> Flow[Decision]:
    """Ask for the verdict on one call; retried only under its request id, so it reserves once."""
    if not (yield EnsureStarted()):
        raise Unreachable(f"gatekeeper at {state.settings.url} unreachable: the session could not start")
    request_id = request_id or uuid.uuid4().hex
    body = {"session_id": state.session_id, "tool": tool, "cost": cost, "preview": preview,
            "approval_id": approval_id, "arguments": arguments, "request_id": request_id}
    answer = yield Send("POST", "/v1/decisions", {k: v for k, v in body.items() if v is not None}, retry=True)
    if state.backlog or state.reports:  # the server is back: catch up on what happened without it
        yield from catch_up(state)
    return Decision.from_answer(answer, request_id=request_id)


def report(state: SessionState, decision: Decision, status: str = "ok", *, actual_cost: float | None = None,
           latency_ms: float | None = None) -> Flow[dict[str, Any]]:
    """Report an allowed call's outcome; a report that finds no server (or a 503) is kept for the catch-up."""
    body = {"status": status, "actual_cost": actual_cost, "latency_ms": latency_ms}
    send = Send("POST", f"/v1/decisions/{decision.decision_id}/outcome",
                {k: v for k, v in body.items() if v is not None}, retry=True)
    try:
        answer: dict[str, Any] = yield send
    except Unavailable:
        _keep(state.reports, send)
        return {}
    return answer


def end(state: SessionState, status: str = "ok", *, passed: bool | None = None) -> Flow[dict[str, Any]]:
    """End the server session (starting it first if calls were made offline) and return its summary."""
    if state.ended:
        return {}
    if state.session_id is None and not state.backlog:
        state.ended = True
        return {}
    if not (yield EnsureStarted()):
        raise Unreachable(f"gatekeeper at {state.settings.url} unreachable: the session could not end")
    yield from catch_up(state)
    body: dict[str, Any] = {"status": status} if passed is None else {"status": status, "passed": passed}
    answer: dict[str, Any] = yield Send("POST", f"/v1/sessions/{state.session_id}/end", body)
    state.ended = True
    return answer


def wait_for_approval(state: SessionState, decision: Decision, tool: str, cost: float, *, timeout: float,
                      preview: str | None, arguments: dict[str, Any] | None) -> Flow[Decision]:
    """Poll the approval until a person decides or `timeout` passes; once approved, decide again with it."""
    approval_id = decision.approval_id or ""
    deadline = time.monotonic() + timeout
    while True:
        answer = yield Send("GET", f"/v1/approvals/{approval_id}", retry=True)
        if answer["state"] == "approved":
            return (yield from decide(state, tool, cost, preview=preview, arguments=arguments,
                                      approval_id=approval_id))
        left = deadline - time.monotonic()
        if answer["state"] != "pending" or left <= 0:
            return _not_approved(decision, answer["state"], timeout)
        yield Sleep(min(state.settings.approval_poll, left))


def _not_approved(decision: Decision, approval_state: str, timeout: float) -> Decision:
    if approval_state == "pending":
        message = f"No one approved this call within {timeout:g} seconds, so it did not run."
        return Decision(decision.decision_id, "approval_required", "approval_timeout", message,
                        approval_id=decision.approval_id, request_id=decision.request_id)
    message = f"A person did not approve this call (the approval is {approval_state}), so it did not run."
    return Decision(decision.decision_id, "deny", f"approval_{approval_state}", message,
                    approval_id=decision.approval_id, request_id=decision.request_id)


def guarded_call(state: SessionState, spec: ToolSpec, fn: Callable[..., Any], args: tuple[Any, ...],
                 kwargs: dict[str, Any]) -> Flow[Any]:
    """Ask, wait for a person if one must approve, run the tool once if allowed, report how it went."""
    arguments = call_arguments(fn, args, kwargs)
    cost = spec.cost(*args, **kwargs) if callable(spec.cost) else spec.cost
    preview = spec.preview(*args, **kwargs) if callable(spec.preview) else spec.preview
    try:
        decision = yield from decide(state, spec.tool, cost, preview=preview, arguments=arguments)
        if decision.verdict == "approval_required":
            timeout = state.settings.approval_timeout if spec.approval_timeout is None else spec.approval_timeout
            decision = yield from wait_for_approval(state, decision, spec.tool, cost, timeout=timeout,
                                                    preview=preview, arguments=arguments)
    except Unavailable as exc:
        log.warning("%s; %s %s", exc, spec.tool, "runs (read-only)" if _runs_offline(state, spec) else "refused")
        decision = offline_decision(allowed=_runs_offline(state, spec))
    if not decision.allowed:
        return refuse(state, spec, decision)
    started = time.perf_counter()
    fault = decision.chaos.fault if decision.chaos is not None else None
    if decision.chaos is not None and decision.chaos.delay_ms > 0:  # a rehearsed latency: part of the call's
        yield Sleep(decision.chaos.delay_ms / 1000)
    if fault == "error":  # a rehearsed tool error: the tool is not called
        yield from _settle(state, spec, decision, cost, arguments, preview, "error", 0.0, started)
        raise ToolError(_chaos.failure_message(spec.tool, fault), tool=spec.tool, decision=decision, injected=True)
    try:
        result = yield Invoke(fn, args, kwargs)
    except Exception:
        yield from _settle(state, spec, decision, cost, arguments, preview, "error", None, started)
        raise
    actual = spec.actual_cost(result) if spec.actual_cost is not None else cost
    if fault == "timeout":  # a rehearsed timeout: the call ran (its effect happened), the agent never hears back
        yield from _settle(state, spec, decision, cost, arguments, preview, "error", actual, started)
        raise ToolTimeout(_chaos.failure_message(spec.tool, fault), tool=spec.tool, decision=decision, injected=True)
    yield from _settle(state, spec, decision, cost, arguments, preview, "ok", actual, started)
    return _chaos.damaged(result, fault)


def _settle(state: SessionState, spec: ToolSpec, decision: Decision, cost: float, arguments: dict[str, Any],
            preview: str | None, status: str, actual_cost: float | None, started: float) -> Flow[None]:
    latency_ms = round((time.perf_counter() - started) * 1000, 3)
    if decision.offline:
        _keep(state.backlog, {"tool": spec.tool, "cost": cost, "arguments": arguments, "preview": preview,
                              "request_id": uuid.uuid4().hex, "status": status, "actual_cost": actual_cost,
                              "latency_ms": latency_ms})
        return
    try:
        yield from report(state, decision, status, actual_cost=actual_cost, latency_ms=latency_ms)
    except GatekeeperError as exc:
        log.warning("could not report the outcome of %s: %s", spec.tool, exc)


def _runs_offline(state: SessionState, spec: ToolSpec) -> bool:
    return spec.read_only and state.settings.read_only_when_unreachable


def refuse(state: SessionState, spec: ToolSpec, decision: Decision) -> Any:
    """Raise the refusal, or return it as the tool's result (`on_refusal="return"`)."""
    from gatekeeper_client.errors import Denied, NotApproved, NotExecuted, Shadowed
    from gatekeeper_client.models import Refusal

    mode = state.on_refusal or spec.on_refusal or state.settings.on_refusal
    if mode == "return":
        return Refusal(decision, spec.tool)
    kinds: dict[str, type[NotExecuted]] = {"shadow": Shadowed, "approval_required": NotApproved}
    kind = NotApproved if decision.reason.startswith("approval_") else kinds.get(decision.verdict, Denied)
    raise kind(decision, spec.tool)


@functools.lru_cache(maxsize=1024)
def _signature(fn: Callable[..., Any]) -> inspect.Signature:
    return inspect.signature(fn)


def call_arguments(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    """Return the call's arguments by parameter name, as JSON (what an approval is bound to)."""
    try:
        bound = _signature(fn).bind_partial(*args, **kwargs)
        named: dict[str, Any] = dict(bound.arguments)
    except (TypeError, ValueError):
        named = {"args": list(args), **kwargs}
    for name, parameter in _parameters(fn).items():
        if parameter.kind is inspect.Parameter.VAR_KEYWORD and name in named:
            named.update(named.pop(name))
    found: dict[str, Any] = json.loads(json.dumps(named, default=str))
    return found


def _parameters(fn: Callable[..., Any]) -> dict[str, inspect.Parameter]:
    try:
        return dict(_signature(fn).parameters)
    except (TypeError, ValueError):
        return {}


def _keep(queue: list[Any], item: Any) -> None:
    if len(queue) >= BACKLOG_LIMIT:
        log.warning("gatekeeper unreachable for too long: dropping the oldest of %d held records", len(queue))
        queue.pop(0)
    queue.append(item)


def ensure_started() -> Flow[bool]:
    """Start the server session if it can be reached; return whether it is started."""
    started: bool = yield EnsureStarted()
    return started
