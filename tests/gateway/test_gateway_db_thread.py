"""The gateway's database thread on a real Postgres: concurrent decisions overlap, every queued outcome is written."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from sqlalchemy import text

from gatekeeper import rollouts
from gatekeeper.config import Settings
from gatekeeper.gateway.db_thread import DatabaseThread
from gatekeeper.gateway.deciding import Decider
from tests.support.gateway_world import POLICY
from tests.support.services import PostgresServer

CALLS = 24


def test_decisions_and_outcomes_on_the_database_thread_reach_postgres(postgres: PostgresServer,
                                                                         tmp_path: Path) -> None:
    (tmp_path / "gw.yaml").write_text(POLICY)
    decider = Decider(Settings(database_url=postgres.create_database("gwthread"), policy_dir=tmp_path))
    decider.svc.db.upgrade()
    rollouts.register_agent(decider.svc, "gw-pg", policy="gw", stable_version="v1", now=time.time())
    opened = decider.open("gw-pg", session_key=None, environment="live")
    threads = DatabaseThread(threads=decider.threads)

    async def main() -> list[str]:
        rulings = await asyncio.gather(*(threads.run(lambda n=n: decider.decide(opened, "search_kb", {"n": n}))
                                         for n in range(CALLS)))
        written: list[str] = []
        for ruling in rulings:
            threads.submit(lambda ruling=ruling: decider.report(ruling, "gw-pg", status="ok", latency_ms=1.0,
                                                                 actual_cost=None),
                           what="report", done=lambda ruling=ruling: written.append(ruling.decision_id))
        await threads.close()  # waits for every queued outcome
        await asyncio.sleep(0)  # their done callbacks run on the loop
        return written

    try:
        written = asyncio.run(main())
        with decider.svc.db.reading() as db:
            rows = db.execute(text("SELECT verdict, outcome_status FROM decisions WHERE session_id = :id"),
                              {"id": opened.session_id}).all()
    finally:
        decider.dispose()
    assert decider.threads == 8 and len(written) == CALLS
    assert sorted(rows) == [("allow", "ok")] * CALLS
