"""64 async tasks over one AsyncGatekeeper against the real app on gunicorn (two workers): caps stay exact."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from gatekeeper_client import AsyncGatekeeper, Refusal, guarded

from tests.support.runtime import Runtime, counts, key_for
from tests.support.servers import Server


@pytest.mark.slow  # gunicorn start and 64 concurrent calls: about 12-20 s on 2 shared cores
def test_64_async_tasks_keep_the_caps_exact(runtime: Runtime, app: Flask, db_url: str, policy_dir: Path,
                                            token: str, served: Callable[..., Server]) -> None:
    runtime.setup("canary", 0)  # candidate caps: 20 tool calls, $0.50 per session
    keys = [key_for("bot", runtime.rollout_id, 1.0, inside=True, start=n) for n in (0, 5000)]
    server = served(database_url=db_url, policy_dir=policy_dir, workers=2)
    ran: list[str] = []

    async def update(ticket: str) -> str:
        await asyncio.sleep(0.001)
        ran.append(ticket)
        return "updated"

    pricey = guarded("update_ticket", cost=0.03, on_refusal="return")(update)  # the spend cap binds: 16
    cheap = guarded("update_ticket", cost=0.01, on_refusal="return")(update)  # the call cap binds: 20

    async def storm() -> tuple[list[Any], list[str | None]]:
        async with AsyncGatekeeper(server.url, token, timeout=30) as agk:
            # The second session starts lazily: 32 tasks race to start it, and one does.
            sessions = [await agk.start_session("bot", session_key=keys[0]), agk.session("bot", session_key=keys[1])]
            calls = [pricey.using(sessions[0])(f"A-{n}") for n in range(32)]
            calls += [cheap.using(sessions[1])(f"B-{n}") for n in range(32)]
            return list(await asyncio.gather(*calls)), [s.session_id for s in sessions]

    results, ids = asyncio.run(storm())
    refused = Counter(r.decision.reason for r in results if isinstance(r, Refusal))
    assert refused == {"cap_spend": 16, "cap_tool_calls": 12}
    assert sum(1 for t in ran if t.startswith("A-")) == 16 and sum(1 for t in ran if t.startswith("B-")) == 20
    sql = "SELECT tool_calls, spend_micros FROM sessions WHERE id = :id"
    assert [counts(app, sql, id=i) for i in ids] == [(16, 480_000), (20, 200_000)]
    assert counts(app, "SELECT count(*) FROM decisions WHERE outcome_status = 'ok'")[0] == 36
    assert counts(app, "SELECT count(*) FROM sessions")[0] == 2
