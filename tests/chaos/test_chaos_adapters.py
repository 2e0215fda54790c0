"""The framework adapters' shared CallGuard applies a twin session's rehearsed failures as the guard does."""

from __future__ import annotations

import asyncio
from typing import Any

from gatekeeper_client import AsyncGatekeeper, ToolError, ToolFailure, ToolTimeout
from gatekeeper_client.adapters._calls import Call, CallGuard, Terms

from tests.support.runtime import Runtime, counts


async def _run(url: str, token: str, *, seed: str, failure: Any = None) -> tuple[list[Any], int, str | None]:
    """Ask and run 16 search_kb calls in a twin session; return what the framework got, tool runs, session id."""
    runs = 0

    async def search() -> dict[str, Any]:
        nonlocal runs
        runs += 1
        return {"pages": ["a", "b", "c", "d"]}

    seen: list[Any] = []
    async with AsyncGatekeeper(url, token, timeout=10) as agk, \
            agk.session("bot", environment="twin", seed=seed) as session:
        guard = CallGuard({"search_kb": Terms(cost=0.001, read_only=True)}, session=session)
        for n in range(16):
            call = Call("search_kb", {"query": f"q{n}"}, f"call-{n}")
            decision = await guard.ask(call)
            try:
                seen.append(await guard.execute(call, decision, search, failure=failure))
            except ToolFailure as exc:
                seen.append(type(exc).__name__)
                # A framework replaying the call gets the same failure, and the tool does not run again.
                again = await guard.ask(call)
                try:
                    await guard.execute(call, again, search)
                except ToolFailure as replayed:
                    assert replayed is exc
        return seen, runs, session.session_id


def test_the_call_guard_applies_the_same_failures_per_seed(runtime: Runtime, live_url: str, token: str) -> None:
    runtime.setup("twin", 0)
    first, runs, session_id = asyncio.run(_run(live_url, token, seed="adapters"))
    again, _, _ = asyncio.run(_run(live_url, token, seed="adapters"))
    assert first == again
    errors, timeouts = first.count("ToolError"), first.count("ToolTimeout")
    assert errors and timeouts and {"pages": ["a", "b"]} in first and any(isinstance(s, str) and s.endswith('{"')
                                                                           for s in first)
    assert runs == 16 - errors  # an injected error never calls the tool; a timeout does
    sql = "SELECT sum(outcome_status = 'error'), sum(outcome_status IS NULL) FROM decisions WHERE session_id = :id"
    assert tuple(counts(app_of(runtime), sql, id=session_id)) == (errors + timeouts, 0)
    # A framework that shows tool errors as results gets them that way instead.
    shown, _, _ = asyncio.run(_run(live_url, token, seed="adapters", failure=lambda exc: f"error: {exc}"))
    assert [s.split(":")[0] if isinstance(s, str) and s.startswith("error") else s for s in shown] == [
        "error" if s in ("ToolError", "ToolTimeout") else s for s in first]
    assert ToolTimeout.__mro__[1:3] == (ToolFailure, TimeoutError) and issubclass(ToolError, ToolFailure)


def app_of(runtime: Runtime) -> Any:
    return runtime.client.application
