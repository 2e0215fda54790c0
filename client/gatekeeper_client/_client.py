"""`Gatekeeper` and `AsyncGatekeeper`, and their sessions: one surface, the flows of `_flow.py` run two ways."""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from types import TracebackType
from typing import Any, TypeVar

import httpx

from gatekeeper_client import _flow
from gatekeeper_client._flow import Flow, Invoke, SessionState, Settings, Sleep
from gatekeeper_client.errors import GatekeeperError, NotExecuted, Unavailable, Unreachable, error_for
from gatekeeper_client.models import Decision, Mirror, OnRefusal

log = logging.getLogger("gatekeeper_client")
T = TypeVar("T")
CURRENT: contextvars.ContextVar[Session | AsyncSession | None] = contextvars.ContextVar(
    "gatekeeper_session", default=None)
# Failures after which a request may be repeated: `connect` ones never reached the server.
_CONNECT_ERRORS = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
_ANSWER_ERRORS = (httpx.ReadTimeout, httpx.WriteTimeout, httpx.RemoteProtocolError, httpx.ReadError,
                  httpx.WriteError)


def current_session() -> Session | AsyncSession | None:
    """Return the session bound by the innermost `with gk.session(...)` / `async with`, if any."""
    return CURRENT.get()


class _Base:
    """Settings and request handling shared by both clients.

    `timeout`: seconds per request. `retries`: repeats of a request that cannot do anything twice (a
    decision under its request id, an outcome report, a GET; anything that never reached the server).
    `read_only_when_unreachable`: read-only tools run while the server cannot be reached. `approval_timeout`
    and `approval_poll`: how long and how often a guard waits for a person. `on_refusal`: "raise" or
    "return" a refused call. `reconnect_after`: seconds after a failed request before trying the server again.
    """

    def __init__(self, url: str, token: str, *, timeout: float = 2.0, retries: int = 2,
                 read_only_when_unreachable: bool = True, approval_timeout: float = 60.0,
                 approval_poll: float = 1.0, on_refusal: OnRefusal = "raise", reconnect_after: float = 1.0) -> None:
        self.settings = Settings(url.rstrip("/"), timeout, retries, read_only_when_unreachable, approval_timeout,
                                 approval_poll, on_refusal, reconnect_after)
        self.down_until = 0.0
        self.headers = {"Authorization": f"Bearer {token}"}

    def _state(self, agent: str, *, session_key: str | None, environment: str, scenario: str | None,
               twin_snapshot_at: datetime | str | None, seed: str | int | None = None,
               arm: str | None = None) -> SessionState:
        body = _flow.session_body(agent, session_key=session_key, environment=environment, scenario=scenario,
                                  twin_snapshot_at=twin_snapshot_at, seed=seed, arm=arm)
        return SessionState(self.settings, agent, body, environment=environment)

    def _attempts(self, send: _flow.Send) -> int:
        return 1 + max(self.settings.retries, 0)

    def _retryable(self, send: _flow.Send, exc: Exception) -> bool:
        return isinstance(exc, _CONNECT_ERRORS) or (send.retry and isinstance(exc, _ANSWER_ERRORS))

    def _unreachable(self, exc: Exception) -> Unreachable:
        # Until `reconnect_after` passes, other calls are refused at once instead of each waiting a timeout.
        self.down_until = time.monotonic() + self.settings.reconnect_after
        return Unreachable(f"gatekeeper at {self.settings.url} unreachable: {type(exc).__name__}: {exc}")

    def _check_down(self) -> None:
        left = self.down_until - time.monotonic()
        if left > 0:
            raise Unreachable(f"gatekeeper at {self.settings.url} unreachable (next attempt in {left:.1f} s)")


def _answer(response: httpx.Response) -> dict[str, Any]:
    if response.status_code >= 400:
        try:
            error = response.json()["error"]
            code, message, field = error.get("code"), error.get("message", ""), error.get("field")
        except (ValueError, KeyError, TypeError, AttributeError):
            code, message, field = None, response.text[:500], None
        raise error_for(response.status_code, code, message, field)
    found: dict[str, Any] = response.json()
    return found


class Gatekeeper(_Base):
    """A client of one gatekeeper server, authenticated by an agent token; one connection pool, reused."""

    def __init__(self, url: str, token: str, *, transport: httpx.BaseTransport | None = None,
                 **settings: Any) -> None:
        super().__init__(url, token, **settings)
        self.http = httpx.Client(base_url=self.settings.url, headers=self.headers,
                                 timeout=self.settings.timeout, transport=transport)

    def session(self, agent: str, *, session_key: str | None = None, environment: str = "live",
                scenario: str | None = None, twin_snapshot_at: datetime | str | None = None,
                seed: str | int | None = None, arm: str | None = None) -> Session:
        """Return a session, started when first used (`with` binds it for guarded tools and ends it).

        `seed` (twin sessions): the seed of the rehearsed failures; the same seed meets the same failures.
        `arm` (twin sessions): "stable" replays the stable version in the twin, to measure its fidelity.
        """
        return Session(self, self._state(agent, session_key=session_key, environment=environment,
                                         scenario=scenario, twin_snapshot_at=twin_snapshot_at, seed=seed, arm=arm))

    def start_session(self, agent: str, **options: Any) -> Session:
        """Start a session now; raise Unreachable when the server cannot be reached."""
        session = self.session(agent, **options)
        session.start()
        return session

    def approval(self, approval_id: str) -> dict[str, Any]:
        """Return an approval, with its `state`: pending, approved, rejected, expired or cancelled."""
        return self.send(_flow.Send("GET", f"/v1/approvals/{approval_id}", retry=True))

    def run(self, agent: str, fn: Callable[..., T], *args: Any, session_key: str | None = None,
            **kwargs: Any) -> T:
        """Run `fn` in a live session and, when the server names a mirror, run the candidate on it after."""
        with self.session(agent, session_key=session_key) as session:
            result = fn(*args, **kwargs)
        mirror = session.mirror_session()
        if mirror is not None:
            status = "ok"
            with mirror.bound():
                try:
                    fn(*args, **kwargs)
                except Exception as exc:  # noqa: BLE001 - the candidate's failure is evidence, never the user's
                    status = "error" if not isinstance(exc, NotExecuted) else "ok"
                    log.info("the candidate's shadow run of %s stopped: %s", agent, exc)
            _quietly(lambda: mirror.end(status))
        return result

    def send(self, send: _flow.Send) -> dict[str, Any]:
        """Send one request, repeating it only when that cannot do anything twice; raise the server's error."""
        self._check_down()
        for attempt in range(self._attempts(send)):
            try:
                return _answer(self.http.request(send.method, send.path, json=send.body))
            except httpx.TransportError as exc:
                if not self._retryable(send, exc) or attempt + 1 == self._attempts(send):
                    raise self._unreachable(exc) from exc
                time.sleep(0.05 * 2 ** attempt)
        raise AssertionError("unreachable")  # pragma: no cover

    def drive(self, flow: Flow[T], state: SessionState, lock: threading.Lock) -> T:
        """Run a flow: the sync way."""
        value: Any = None
        error: BaseException | None = None
        while True:
            try:
                effect = flow.throw(error) if error is not None else flow.send(value)
            except StopIteration as stop:
                return stop.value
            value, error = None, None
            try:
                value = self._effect(effect, state, lock)
            except Exception as exc:  # noqa: BLE001 - thrown into the flow, which decides
                error = exc

    def _effect(self, effect: _flow.Effect, state: SessionState, lock: threading.Lock) -> Any:
        if isinstance(effect, _flow.Send):
            return self.send(effect)
        if isinstance(effect, Sleep):
            time.sleep(effect.seconds)
            return None
        if isinstance(effect, Invoke):
            return effect.fn(*effect.args, **effect.kwargs)
        if state.session_id is None:
            with lock:
                if state.session_id is None:
                    try:
                        self.drive(_flow.start(state), state, lock)
                    except Unavailable as exc:
                        log.warning("%s", exc)
        return state.session_id is not None

    def close(self) -> None:
        """Close the connection pool."""
        self.http.close()

    def __enter__(self) -> Gatekeeper:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncGatekeeper(_Base):
    """The same client for asyncio: every call that talks to the server is awaited."""

    def __init__(self, url: str, token: str, *, transport: httpx.AsyncBaseTransport | None = None,
                 **settings: Any) -> None:
        super().__init__(url, token, **settings)
        self.http = httpx.AsyncClient(base_url=self.settings.url, headers=self.headers,
                                      timeout=self.settings.timeout, transport=transport,
                                      limits=httpx.Limits(max_connections=100, max_keepalive_connections=100))

    def session(self, agent: str, *, session_key: str | None = None, environment: str = "live",
                scenario: str | None = None, twin_snapshot_at: datetime | str | None = None,
                seed: str | int | None = None, arm: str | None = None) -> AsyncSession:
        """Return a session, started when first used (`async with` binds it for guarded tools and ends it).

        `seed` (twin sessions): the seed of the rehearsed failures; the same seed meets the same failures.
        `arm` (twin sessions): "stable" replays the stable version in the twin, to measure its fidelity.
        """
        return AsyncSession(self, self._state(agent, session_key=session_key, environment=environment,
                                              scenario=scenario, twin_snapshot_at=twin_snapshot_at, seed=seed, arm=arm))

    async def start_session(self, agent: str, **options: Any) -> AsyncSession:
        """Start a session now; raise Unreachable when the server cannot be reached."""
        session = self.session(agent, **options)
        await session.start()
        return session

    async def approval(self, approval_id: str) -> dict[str, Any]:
        """Return an approval, with its `state`: pending, approved, rejected, expired or cancelled."""
        return await self.send(_flow.Send("GET", f"/v1/approvals/{approval_id}", retry=True))

    async def run(self, agent: str, fn: Callable[..., Awaitable[T]], *args: Any, session_key: str | None = None,
                  **kwargs: Any) -> T:
        """Run `fn` in a live session and, when the server names a mirror, the candidate on it alongside."""
        session = self.session(agent, session_key=session_key)
        await session.start_or_defer()
        mirror = session.mirror_session()

        async def stable() -> T:
            async with session:
                return await fn(*args, **kwargs)

        async def candidate() -> None:
            if mirror is None:
                return
            status = "ok"
            async with mirror.bound():
                try:
                    await fn(*args, **kwargs)
                except Exception as exc:  # noqa: BLE001 - the candidate's failure is evidence, never the user's
                    status = "error" if not isinstance(exc, NotExecuted) else "ok"
                    log.info("the candidate's shadow run of %s stopped: %s", agent, exc)
            try:
                await mirror.end(status)
            except GatekeeperError as exc:
                log.warning("could not end the mirror session: %s", exc)

        result, _ = await asyncio.gather(stable(), candidate())
        return result

    async def send(self, send: _flow.Send) -> dict[str, Any]:
        """Send one request, repeating it only when that cannot do anything twice; raise the server's error."""
        self._check_down()
        for attempt in range(self._attempts(send)):
            try:
                return _answer(await self.http.request(send.method, send.path, json=send.body))
            except httpx.TransportError as exc:
                if not self._retryable(send, exc) or attempt + 1 == self._attempts(send):
                    raise self._unreachable(exc) from exc
                await asyncio.sleep(0.05 * 2 ** attempt)
        raise AssertionError("unreachable")  # pragma: no cover

    async def drive(self, flow: Flow[T], state: SessionState, lock: asyncio.Lock) -> T:
        """Run a flow: the asyncio way."""
        value: Any = None
        error: BaseException | None = None
        while True:
            try:
                effect = flow.throw(error) if error is not None else flow.send(value)
            except StopIteration as stop:
                return stop.value
            value, error = None, None
            try:
                value = await self._effect(effect, state, lock)
            except Exception as exc:  # noqa: BLE001 - thrown into the flow, which decides
                error = exc

    async def _effect(self, effect: _flow.Effect, state: SessionState, lock: asyncio.Lock) -> Any:
        if isinstance(effect, _flow.Send):
            return await self.send(effect)
        if isinstance(effect, Sleep):
            await asyncio.sleep(effect.seconds)
            return None
        if isinstance(effect, Invoke):
            result = effect.fn(*effect.args, **effect.kwargs)
            return await result if inspect.isawaitable(result) else result
        if state.session_id is None:
            async with lock:
                if state.session_id is None:
                    try:
                        await self.drive(_flow.start(state), state, lock)
                    except Unavailable as exc:
                        log.warning("%s", exc)
        return state.session_id is not None

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self.http.aclose()

    async def __aenter__(self) -> AsyncGatekeeper:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


class _SessionBase:
    """What both sessions show: the server's assignment, known once the session has started."""

    state: SessionState

    @property
    def session_id(self) -> str | None:
        return self.state.session_id

    @property
    def agent(self) -> str:
        return self.state.agent

    @property
    def version(self) -> str | None:
        return self.state.version

    @property
    def arm(self) -> str | None:
        return self.state.arm

    @property
    def stage(self) -> str | None:
        return self.state.stage

    @property
    def environment(self) -> str:
        return self.state.environment

    @property
    def caps(self) -> dict[str, Any]:
        return self.state.caps

    @property
    def mirror(self) -> Mirror | None:
        return self.state.mirror

    @property
    def seed(self) -> str | None:
        """Return a twin session's chaos seed (start another session with it to meet the same failures)."""
        return self.state.seed

    def _mirror_state(self) -> SessionState | None:
        if self.state.mirror is None:
            return None
        return SessionState(self.state.settings, self.state.agent, {}, session_id=self.state.mirror.session_id,
                            version=self.state.mirror.version, arm="candidate", stage="shadow",
                            environment=self.state.environment, on_refusal="return")


class Session(_SessionBase):
    """One task or conversation of an agent (sync); `with session:` binds it for guarded tools and ends it."""

    def __init__(self, client: Gatekeeper, state: SessionState) -> None:
        self.client, self.state, self.lock = client, state, threading.Lock()
        self._tokens: list[contextvars.Token[Session | AsyncSession | None]] = []

    def _drive(self, flow: Flow[T]) -> T:
        return self.client.drive(flow, self.state, self.lock)

    def start(self) -> Session:
        """Start the server session now; raise Unreachable when the server cannot be reached."""
        if not self._drive(_flow.ensure_started()):
            raise Unreachable(f"gatekeeper at {self.state.settings.url} unreachable: the session could not start")
        return self

    def decide(self, tool: str, cost: float, *, preview: str | None = None, arguments: dict[str, Any] | None = None,
               approval_id: str | None = None, request_id: str | None = None) -> Decision:
        """Ask for the verdict on one call (no guard); a retry under the same `request_id` reserves once."""
        return self._drive(_flow.decide(self.state, tool, cost, preview=preview, arguments=arguments,
                                        approval_id=approval_id, request_id=request_id))

    def report(self, decision: Decision, status: str = "ok", *, actual_cost: float | None = None,
               latency_ms: float | None = None) -> dict[str, Any]:
        """Report an allowed call's outcome and actual cost; repeating the same report is harmless."""
        return self._drive(_flow.report(self.state, decision, status, actual_cost=actual_cost,
                                        latency_ms=latency_ms))

    def end(self, status: str = "ok", *, passed: bool | None = None) -> dict[str, Any]:
        """End the session and return its summary."""
        return self._drive(_flow.end(self.state, status, passed=passed))

    def mirror_session(self) -> Session | None:
        """Return the candidate's mirror of this session (shadow): run the candidate in it."""
        state = self._mirror_state()
        return None if state is None else Session(self.client, state)

    def bound(self) -> _Binding:
        """Bind this session for guarded tools without ending it when the block ends."""
        return _Binding(self)

    def __enter__(self) -> Session:
        self._drive(_flow.ensure_started())  # now if it can; else at the first call (fail safe)
        self._tokens.append(CURRENT.set(self))
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        CURRENT.reset(self._tokens.pop())
        _quietly(lambda: self.end("error" if error is not None and not isinstance(error, NotExecuted) else "ok"))


class AsyncSession(_SessionBase):
    """One task or conversation of an agent (asyncio); `async with session:` binds it and ends it."""

    def __init__(self, client: AsyncGatekeeper, state: SessionState) -> None:
        self.client, self.state, self.lock = client, state, asyncio.Lock()
        self._tokens: list[contextvars.Token[Session | AsyncSession | None]] = []

    async def _drive(self, flow: Flow[T]) -> T:
        return await self.client.drive(flow, self.state, self.lock)

    async def start(self) -> AsyncSession:
        """Start the server session now; raise Unreachable when the server cannot be reached."""
        if not await self.start_or_defer():
            raise Unreachable(f"gatekeeper at {self.state.settings.url} unreachable: the session could not start")
        return self

    async def start_or_defer(self) -> bool:
        """Start the server session if it can be reached; return whether it started."""
        started: bool = await self._drive(_flow.ensure_started())
        return started

    async def decide(self, tool: str, cost: float, *, preview: str | None = None,
                     arguments: dict[str, Any] | None = None, approval_id: str | None = None,
                     request_id: str | None = None) -> Decision:
        """Ask for the verdict on one call (no guard); a retry under the same `request_id` reserves once."""
        return await self._drive(_flow.decide(self.state, tool, cost, preview=preview, arguments=arguments,
                                              approval_id=approval_id, request_id=request_id))

    async def report(self, decision: Decision, status: str = "ok", *, actual_cost: float | None = None,
                     latency_ms: float | None = None) -> dict[str, Any]:
        """Report an allowed call's outcome and actual cost; repeating the same report is harmless."""
        return await self._drive(_flow.report(self.state, decision, status, actual_cost=actual_cost,
                                              latency_ms=latency_ms))

    async def end(self, status: str = "ok", *, passed: bool | None = None) -> dict[str, Any]:
        """End the session and return its summary."""
        return await self._drive(_flow.end(self.state, status, passed=passed))

    def mirror_session(self) -> AsyncSession | None:
        """Return the candidate's mirror of this session (shadow): run the candidate in it."""
        state = self._mirror_state()
        return None if state is None else AsyncSession(self.client, state)

    def bound(self) -> _AsyncBinding:
        """Bind this session for guarded tools without ending it when the block ends."""
        return _AsyncBinding(self)

    async def __aenter__(self) -> AsyncSession:
        await self.start_or_defer()  # now if it can; else at the first call (fail safe)
        self._tokens.append(CURRENT.set(self))
        return self

    async def __aexit__(self, kind: type[BaseException] | None, error: BaseException | None,
                        trace: TracebackType | None) -> None:
        CURRENT.reset(self._tokens.pop())
        try:
            await self.end("error" if error is not None and not isinstance(error, NotExecuted) else "ok")
        except GatekeeperError as exc:
            log.warning("could not end the session: %s", exc)


class _Binding:
    def __init__(self, session: Session) -> None:
        self.session = session

    def __enter__(self) -> Session:
        self.token = CURRENT.set(self.session)
        return self.session

    def __exit__(self, *exc: object) -> None:
        CURRENT.reset(self.token)


class _AsyncBinding:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def __aenter__(self) -> AsyncSession:
        self.token = CURRENT.set(self.session)
        return self.session

    async def __aexit__(self, *exc: object) -> None:
        CURRENT.reset(self.token)


def _quietly(action: Callable[[], Any]) -> None:
    try:
        action()
    except GatekeeperError as exc:
        log.warning("gatekeeper: %s", exc)
