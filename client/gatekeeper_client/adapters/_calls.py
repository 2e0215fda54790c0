"""What the framework adapters share: one framework tool call asked about, run once, reported; approvals waited on.

A framework hands an adapter a tool name, the call's JSON arguments and the model's call id. The adapter asks
under a request id made from those three, so asking again about the same call (a framework resuming a run
after a person approved, LangGraph replaying a node after `interrupt`) returns the first answer and reserves
nothing twice (SPEC §5); the call after an approval is asked with the approval id under a request id of its own.
No framework is imported here.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import json
import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from gatekeeper_client import _chaos, _flow
from gatekeeper_client._client import AsyncSession, Session, current_session
from gatekeeper_client.errors import GatekeeperError, ToolError, ToolFailure, ToolTimeout, Unreachable
from gatekeeper_client.guard import NoSession
from gatekeeper_client.models import Decision, offline_decision

log = logging.getLogger("gatekeeper_client")
APPROVAL_KEY = "gatekeeper_approval_id"
RAN_LIMIT = 4096  # results kept for replayed calls  # how an adapter names the approval in a framework's pause


@dataclass(frozen=True)
class Terms:
    """What Gatekeeper is told about one tool: its estimated cost, whether it is read-only, how to show a call.

    `cost` and `preview` may be functions of the call's arguments (as keywords); `actual_cost` a function of
    the result. A read-only tool runs when the server cannot be reached (if the client allows it).
    """

    cost: float | Callable[..., float] = 0.0
    read_only: bool = False
    preview: str | Callable[..., str] | None = None
    actual_cost: Callable[[Any], float] | None = None


@dataclass(frozen=True)
class Call:
    """One tool call as a framework gives it: tool name, JSON arguments, the model's call id."""

    tool: str
    arguments: dict[str, Any]
    call_id: str | None = None

    def request_id(self, *, approval_id: str | None = None) -> str | None:
        """Return the retry key of this call (None without a call id): the same call always gets the same key."""
        if not self.call_id:
            return None
        canonical = json.dumps([self.tool, self.call_id, self.arguments, approval_id], sort_keys=True,
                               separators=(",", ":"), default=str)
        return "call-" + hashlib.sha256(canonical.encode()).hexdigest()[:40]


@dataclass(frozen=True)
class Resolution:
    """What became of an approval: approved, or not (rejected, expired, cancelled, still pending) with why."""

    approval_id: str
    state: str
    message: str

    @property
    def approved(self) -> bool:
        """Return whether a person approved the call."""
        return self.state == "approved"


@dataclass
class Outcome:
    """How one allowed call went: its result, status, actual cost and latency, and whether the server has it."""

    result: Any
    status: str
    actual_cost: float | None
    latency_ms: float
    reported: bool = False
    raised: ToolFailure | None = None  # a rehearsed failure the agent got instead of the result


@dataclass
class CallGuard:
    """Ask Gatekeeper about a framework's tool calls, run the allowed ones once, report how they went.

    `tools` maps tool names to their `Terms` (or just a cost in dollars); a tool not named costs `default_cost`.
    The session is `session` when given, else the one bound in the current context (`async with gk.session(...)`).
    """

    tools: Mapping[str, Terms | float] = field(default_factory=dict)
    session: Session | AsyncSession | None = None
    default_cost: float = 0.0
    approval_timeout: float | None = None  # seconds to wait for a person; None: the client's setting
    # What each allowed decision's call returned, by decision id: a framework that replays a call it already ran
    # (LangGraph reruns a whole tool node after an interrupt) gets the same decision back for the same request
    # id, and gets this result instead of running the tool again. Bounded; kept in this process only.
    ran: OrderedDict[str, Outcome] = field(default_factory=OrderedDict, repr=False)

    def terms(self, tool: str) -> Terms:
        """Return the terms of one tool."""
        found = self.tools.get(tool, self.default_cost)
        return found if isinstance(found, Terms) else Terms(cost=float(found))

    def current(self) -> Session | AsyncSession:
        """Return the session the calls are asked in, or raise NoSession."""
        session = self.session or current_session()
        if session is None:
            raise NoSession("a guarded tool was called outside a session: bind one with `async with "
                            "gk.session(...)` or give the adapter `session=`")
        return session

    async def ask(self, call: Call, *, approval_id: str | None = None) -> Decision:
        """Ask for the verdict on one call; when the server cannot be reached, only read-only tools may run."""
        terms, session = self.terms(call.tool), self.current()
        try:
            decision: Decision = await _await(
                session.decide, call.tool, _value(terms.cost, call.arguments), preview=_preview(terms, call.arguments),
                arguments=call.arguments, approval_id=approval_id, request_id=call.request_id(approval_id=approval_id))
            return decision
        except Unreachable as exc:
            runs = terms.read_only and session.state.settings.read_only_when_unreachable
            log.warning("%s; %s %s", exc, call.tool, "runs (read-only)" if runs else "refused")
            return offline_decision(allowed=runs)

    async def ask_approved(self, call: Call) -> Decision:
        """Ask again about a call a person was asked to approve, with its approval (the first answer else)."""
        decision = await self.ask(call)
        if decision.verdict == "approval_required" and decision.approval_id:
            return await self.ask(call, approval_id=decision.approval_id)
        return decision

    async def execute(self, call: Call, decision: Decision, invoke: Callable[[], Awaitable[Any]], *,
                      failed: Callable[[Any], bool] | None = None,
                      failure: Callable[[ToolFailure], Any] | None = None,
                      damage: Callable[[Any, str | None], Any] = _chaos.damaged) -> Any:
        """Run an allowed call once, timed, and report its outcome and actual cost.

        The outcome is an error when the call raised, or when `failed(result)` says its result stands for one
        (a framework that turns a tool's exception into a message). A call replayed under a decision that
        already ran returns the first result without running again, and sends the report if it never arrived.
        A twin session's rehearsed failure (`decision.chaos`) is applied as the guard applies it: the delay,
        then ToolError (the tool not called) or ToolTimeout (called) raised, or `failure(exc)` returned as the
        framework's error result; a partial or malformed result is `damage(result, fault)`.
        """
        done = self.ran.get(decision.decision_id or "")
        if done is not None:
            await self.settle(call, decision, done)
            if done.raised is not None:
                raise done.raised
            return done.result
        started = time.perf_counter()
        fault = decision.chaos.fault if decision.chaos is not None else None
        if decision.chaos is not None and decision.chaos.delay_ms > 0:
            await asyncio.sleep(decision.chaos.delay_ms / 1000)
        if fault == "error":  # rehearsed: the tool is not called
            return await self._injected(call, decision, Outcome(None, "error", 0.0, _since(started)), fault, failure)
        try:
            result = await invoke()
        except Exception:
            await self.settle(call, decision, Outcome(None, "error", None, _since(started)))
            raise
        terms = self.terms(call.tool)
        actual = terms.actual_cost(result) if terms.actual_cost else _value(terms.cost, call.arguments)
        if fault == "timeout":  # rehearsed: the call ran, its effect happened, the agent never hears back
            return await self._injected(call, decision, Outcome(None, "error", actual, _since(started)), fault,
                                        failure)
        if failed is not None and failed(result):
            outcome = Outcome(result, "error", None, _since(started))
        else:
            outcome = Outcome(damage(result, fault) if fault else result, "ok", actual, _since(started))
        self._remember(decision, outcome)
        await self.settle(call, decision, outcome)
        return outcome.result

    async def _injected(self, call: Call, decision: Decision, outcome: Outcome, fault: str,
                        failure: Callable[[ToolFailure], Any] | None) -> Any:
        """Report a rehearsed error or timeout, then raise it (or return the framework's error result for it)."""
        kind = ToolError if fault == "error" else ToolTimeout
        exc = kind(_chaos.failure_message(call.tool, fault), tool=call.tool, decision=decision, injected=True)
        if failure is None:
            outcome.raised = exc
        else:
            outcome.result = failure(exc)
        self._remember(decision, outcome)
        await self.settle(call, decision, outcome)
        if outcome.raised is not None:
            raise exc
        return outcome.result

    def _remember(self, decision: Decision, outcome: Outcome) -> None:
        if decision.decision_id is not None:
            self.ran[decision.decision_id] = outcome
            while len(self.ran) > RAN_LIMIT:
                self.ran.popitem(last=False)

    async def settle(self, call: Call, decision: Decision, outcome: Outcome) -> None:
        """Report an outcome once; the report goes on even when the framework cancels the call meanwhile
        (LangGraph cancels a node's other calls when one of them interrupts)."""
        if not outcome.reported:
            await asyncio.shield(self.report(call, decision, outcome))

    async def report(self, call: Call, decision: Decision, outcome: Outcome) -> None:
        """Report one outcome; a failed report is logged, never raised into the agent.

        A call run while the server was unreachable joins the session's backlog, which the client replays
        (decided and reported) when the server is back, as it does for its own guarded tools.
        """
        if decision.offline:
            terms = self.terms(call.tool)
            _flow._keep(self.current().state.backlog, {
                "tool": call.tool, "cost": _value(terms.cost, call.arguments), "arguments": call.arguments,
                "preview": _preview(terms, call.arguments), "request_id": uuid.uuid4().hex,
                "status": outcome.status, "actual_cost": outcome.actual_cost, "latency_ms": outcome.latency_ms})
            outcome.reported = True
            return
        if decision.decision_id is None:
            return
        try:
            await _await(self.current().report, decision, outcome.status, actual_cost=outcome.actual_cost,
                         latency_ms=outcome.latency_ms)
            outcome.reported = True
        except GatekeeperError as exc:
            log.warning("could not report the outcome of %s: %s", call.tool, exc)

    async def wait(self, approval_id: str, *, timeout: float | None = None) -> Resolution:
        """Wait (bounded) until a person approves or rejects; return what became of the approval."""
        session = self.current()
        settings = session.state.settings
        limit = timeout if timeout is not None else (self.approval_timeout if self.approval_timeout is not None
                                                     else settings.approval_timeout)
        deadline = time.monotonic() + limit
        while True:
            state = (await _await(session.client.approval, approval_id))["state"]
            left = deadline - time.monotonic()
            if state != "pending" or left <= 0:
                return Resolution(approval_id, state, _resolution_message(state, limit))
            await asyncio.sleep(min(settings.approval_poll, left))


def refusal_message(call: Call, decision: Decision) -> str:
    """Return the plain sentence handed back to the model for a call that did not run."""
    return decision.message or f"{call.tool} did not run: {decision.verdict} ({decision.reason})."


def _resolution_message(state: str, timeout: float) -> str:
    if state == "approved":
        return "A person approved this call."
    if state == "pending":
        return f"No one approved this call within {timeout:g} seconds, so it did not run."
    return f"A person did not approve this call (the approval is {state}), so it did not run."


def _since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 3)


def _value(cost: float | Callable[..., float], arguments: dict[str, Any]) -> float:
    return float(cost(**arguments)) if callable(cost) else float(cost)


def _preview(terms: Terms, arguments: dict[str, Any]) -> str | None:
    return terms.preview(**arguments) if callable(terms.preview) else terms.preview


async def _await(method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call a session's method: awaited for an AsyncSession, in a thread for a sync Session (never blocking)."""
    if inspect.iscoroutinefunction(method):
        return await method(*args, **kwargs)
    return await asyncio.to_thread(method, *args, **kwargs)
