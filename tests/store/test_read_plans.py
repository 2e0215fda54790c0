"""Every read path finds its rows through an index: none walks the history tables or sorts all of them.

The statements each page, listing, scrape and the built-in gate source run are recorded and
handed to SQLite's EXPLAIN QUERY PLAN. Without statistics (Gatekeeper never runs ANALYZE) the
plan is the same on a small database as on one grown to millions of decisions, so a full scan
seen here is a read path whose cost grows with history (bench/history.py times them).
"""

from __future__ import annotations

import re
import sqlite3
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import event

from gatekeeper.metric_sources import BuiltinSource
from gatekeeper.tier_signals import SignalRequest
from tests.support import seed
from tests.support.app import POLICIES, svc
from tests.support.dashboard import signed_in, users  # noqa: F401 - the fixture

HISTORY_TABLES = ("decisions", "sessions", "gate_evaluations", "transitions")
ALIAS = re.compile(r"\b({})\s+(?:AS\s+)?(\w+)".format("|".join(HISTORY_TABLES)), re.IGNORECASE)
SQL_WORDS = {"WHERE", "JOIN", "ON", "GROUP", "ORDER", "LIMIT", "LEFT", "INNER", "SET", "USING"}
MINUTE = 60.0


@contextmanager
def recorded(app: Flask) -> Iterator[list[tuple[str, Any]]]:
    """Record every statement the app's engine runs."""
    seen: list[tuple[str, Any]] = []

    def record(conn: Any, cursor: Any, statement: str, params: Any, context: Any, many: bool) -> None:
        seen.append((statement, params))

    engine = svc(app).db.engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)


def full_scans(path: Path, statements: list[tuple[str, Any]]) -> list[str]:
    """Return the plan lines that read a history table whole or sort one's rows, with their statement."""
    found = []
    with closing(sqlite3.connect(path)) as raw:
        for statement, params in statements:
            if not statement.lstrip().upper().startswith("SELECT"):
                continue
            aliases = {alias for _, alias in ALIAS.findall(statement) if alias.upper() not in SQL_WORDS}
            for *_, line in raw.execute(f"EXPLAIN QUERY PLAN {statement}", params or ()):
                scan = re.match(r"SCAN (\w+)", line)
                if scan and scan.group(1) in {*HISTORY_TABLES, *aliases} and "COVERING INDEX" not in line:
                    found.append(f"{line}: {' '.join(statement.split())[:200]}")
    return found


def _world(app: Flask) -> str:
    now = time.time()
    service = svc(app)
    seed.start(service, "support-bot", policy="support-default", stable="v6", candidate="v7", at=now - 3 * 3600)
    policy = service.policies.get("support-default").policy
    seed.canary_history(service, "support-bot", policy=policy, now=now)
    for n in range(6):
        live = seed.live_session(service, "support-bot", at=now - n * MINUTE, arm=("candidate", "stable")[n % 2])
        seed.record_call(service, live, tool="search_kb", tool_class="read", verdict="allow", at=now - n * MINUTE,
                         outcome=("ok", 0.01, 120.0))
    seed.open_approval(service, "support-bot", tool="send_email", tool_class="irreversible", cost=0.01,
                       preview="to: a@example.com", at=now - MINUTE)
    stable = seed.live_session(service, "support-bot", at=now, arm="stable")
    seed.live_session(service, "support-bot", at=now, arm="candidate", mirror_of=stable, stage="shadow")
    return stable


def _sessions_pages(client: FlaskClient, rm: dict[str, str]) -> None:
    """Walk the session listing: a plain page, the next one by cursor, and a filtered page."""
    url = "/v1/agents/support-bot/sessions"
    first = client.get(url, query_string={"limit": "3"}, headers=rm).get_json()
    assert len(first["items"]) == 3 and first["next"], first
    assert client.get(url, query_string={"limit": "3", "before": first["next"]}, headers=rm).status_code == 200
    filtered = client.get(url, query_string={"environment": "live", "arm": "stable", "status": "open",
                                             "before": first["next"]}, headers=rm)
    assert filtered.status_code == 200 and filtered.get_json()["items"], filtered.get_json()


def test_no_read_path_walks_the_history(app: Flask, client: FlaskClient, rm: dict[str, str],
                                        users: dict[str, str]) -> None:  # noqa: F811 - the fixture
    traced = _world(app)
    path = Path(svc(app).settings.database_url.split("///", 1)[1])
    assert path.exists() and POLICIES.is_dir()
    page = app.test_client()
    signed_in(page, "victor")
    rollout_id = client.get("/v1/agents/support-bot", headers=rm).get_json()["rollout"]["id"]
    with recorded(app) as statements:
        for url in ("/v1/agents", "/v1/agents/support-bot", "/v1/agents/support-bot/history?limit=20&offset=10",
                    "/metrics", f"/v1/sessions/{traced}"):
            assert client.get(url, headers=rm).status_code == 200, url
        _sessions_pages(client, rm)
        for url in ("/", "/agents/support-bot", "/agents/support-bot/sessions?environment=twin"):
            assert page.get(url).status_code == 200, url
        requests = [SignalRequest("support-bot", "v7", rollout_id, window_s=600.0, tier_started_at=time.time() - 3600,
                                  compare=compare) for compare in (False, True)]
        batch = BuiltinSource(svc(app).db).tier_signals(requests * 4, now=time.time())
    assert batch.status.available
    assert len(statements) > 40  # every path above was recorded
    assert full_scans(path, statements) == []


def test_the_gate_source_reads_each_rollouts_window_only(app: Flask) -> None:
    """Each rollout's range is bounded at both ends: a tier's traffic before the window is never walked."""
    _world(app)
    path = Path(svc(app).settings.database_url.split("///", 1)[1])
    now = time.time()
    # Two rollouts (the second has no rows: the plan depends on the statement's shape only).
    requests = [SignalRequest("support-bot", "v7", rollout_id, window_s=600.0, tier_started_at=now - 3600)
                for rollout_id in (1, 2)]
    with recorded(app) as statements:
        assert BuiltinSource(svc(app).db).tier_signals(requests, now=now).status.available
    searches = []
    with closing(sqlite3.connect(path)) as raw:
        for statement, params in statements:
            if "rollout_id" in statement and statement.lstrip().upper().startswith("SELECT"):
                plan = [line for *_, line in raw.execute(f"EXPLAIN QUERY PLAN {statement}", params or ())]
                searches += [line for line in plan if "ix_sessions_rollout_started" in line
                             or "ix_decisions_rollout_arm_outcome" in line]
    assert len(searches) == 6, searches  # three queries, one range per rollout
    assert all(re.search(r"(started_at|outcome_at)>\? AND \1<\?", line) for line in searches), searches
