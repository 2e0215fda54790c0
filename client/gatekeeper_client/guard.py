"""Guarded tools: declared once, bound per run to the session of the current context.

    @guarded("send_email", cost=0.01)
    async def send_email(to: str, body: str) -> str: ...

    async with gk.session("support-bot", session_key=conversation_id):
        await send_email("ana@example.com", "Your refund is on its way")

One tool object serves every conversation: each call finds its session in a context variable (set by
`with gk.session(...)`, `async with`, or `session.bound()`), or is given one with `tool.using(session)`.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import Callable
from typing import Any, Generic, ParamSpec, TypeVar, cast

from gatekeeper_client import _flow
from gatekeeper_client._client import AsyncSession, Session, current_session
from gatekeeper_client._flow import ToolSpec
from gatekeeper_client.errors import GatekeeperError
from gatekeeper_client.models import OnRefusal

P = ParamSpec("P")
R = TypeVar("R")


class NoSession(GatekeeperError):
    """A guarded tool was called outside any session."""

    status, code = 400, "no_session"


class GuardedTool(Generic[P, R]):
    """A tool that asks Gatekeeper before every call; call it like the function it wraps."""

    def __init__(self, fn: Callable[P, R], spec: ToolSpec, *, session: Session | AsyncSession | None = None) -> None:
        self.fn, self.spec, self.session = fn, spec, session
        self.is_async = inspect.iscoroutinefunction(fn)
        functools.update_wrapper(self, fn)

    @property
    def tool(self) -> str:
        return self.spec.tool

    def using(self, session: Session | AsyncSession) -> GuardedTool[P, R]:
        """Return this tool bound to an explicit session instead of the current one."""
        return GuardedTool(self.fn, self.spec, session=session)

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        session = self._session()
        flow = _flow.guarded_call(session.state, self.spec, self.fn, args, kwargs)
        if self.is_async:
            return cast(R, _run_async(session, flow))
        if isinstance(session, AsyncSession):
            raise NoSession(f"{self.tool} is a sync tool: call it in a sync session (Gatekeeper), "
                            "or make it `async def` to use an AsyncGatekeeper session")
        return session._drive(flow)

    def __get__(self, instance: Any, owner: type | None = None) -> Any:
        # A method: bind the instance first, so `self` is neither in the arguments nor in the approval's digest.
        return self if instance is None else GuardedTool(functools.partial(self.fn, instance), self.spec,
                                                         session=self.session)

    def _session(self) -> Session | AsyncSession:
        session = self.session or current_session()
        if session is None:
            raise NoSession(f"{self.tool} was called outside a session: use `with gk.session(...)`, "
                            f"`async with`, or {self.spec.tool}.using(session)")
        return session


async def _run_async(session: Session | AsyncSession, flow: _flow.Flow[Any]) -> Any:
    if isinstance(session, AsyncSession):
        return await session._drive(flow)
    # A sync session inside async code: its blocking requests go to a thread, the tool stays on the loop.
    return await _drive_sync_session_async(session, flow)


async def _drive_sync_session_async(session: Session, flow: _flow.Flow[Any]) -> Any:
    value: Any = None
    error: BaseException | None = None
    while True:
        try:
            effect = flow.throw(error) if error is not None else flow.send(value)
        except StopIteration as stop:
            return stop.value
        value, error = None, None
        try:
            if isinstance(effect, _flow.Invoke):
                value = effect.fn(*effect.args, **effect.kwargs)
                value = await value if inspect.isawaitable(value) else value
            else:
                value = await asyncio.to_thread(session.client._effect, effect, session.state, session.lock)
        except Exception as exc:  # noqa: BLE001 - thrown into the flow, which decides
            error = exc


def guarded(tool: str, *, cost: float | Callable[..., float], read_only: bool = False,
            preview: str | Callable[..., str] | None = None, actual_cost: Callable[[Any], float] | None = None,
            on_refusal: OnRefusal | None = None, approval_timeout: float | None = None
            ) -> Callable[[Callable[P, R]], GuardedTool[P, R]]:
    """Declare a guarded tool: ask before each call, wait for approval, run once if allowed, report the outcome.

    `cost` and `preview` may be functions of the call's arguments; `actual_cost` a function of its result.
    `on_refusal="return"` makes a refused call return its plain message (a `Refusal`, a str) instead of
    raising; `approval_timeout` bounds the wait for a person (seconds; 0: do not wait).
    """
    spec = ToolSpec(tool, cost, read_only, preview, actual_cost, on_refusal, approval_timeout)

    def wrap(fn: Callable[P, R]) -> GuardedTool[P, R]:
        return GuardedTool(fn, spec)

    return wrap
