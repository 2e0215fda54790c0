"""One signing key for every worker and replica (issue 11 §1); the browser tests against real servers are in
tests/dashboard/test_works_as_started.py."""

from __future__ import annotations

import multiprocessing
import time
from pathlib import Path
from typing import Any

from gatekeeper import create_app
from gatekeeper.store.db import Database
from gatekeeper.store.signing import get_signing_key
from gatekeeper.web.security import COOKIE_KEY, shared_signing_key
from tests.support.app import POLICIES
from tests.support.services import PostgresServer


def _key_of(url: str) -> str:
    database = Database(url)
    try:
        return shared_signing_key(database, now=time.time())
    finally:
        database.dispose()


def _concurrent_first_keys(url: str, processes: int = 6) -> set[str]:
    db = Database(url)
    db.upgrade()
    db.dispose()
    # Spawned, not forked: a fork copies whatever lock another thread of this test process (an earlier
    # test's WAL checkpointer, say) holds at that instant, and a child then waits on it forever.
    spawn = multiprocessing.get_context("spawn")
    start = spawn.Barrier(processes)
    with spawn.Pool(processes, initializer=_wait_for_all, initargs=(start,)) as pool:
        return set(pool.map_async(_key_of, [url] * processes, chunksize=1).get(timeout=120))


def _wait_for_all(start: Any) -> None:
    start.wait(timeout=60)  # every process is up before any asks for the key


def test_concurrent_first_starts_agree_on_one_key_on_sqlite(tmp_path: Path) -> None:
    keys = _concurrent_first_keys(f"sqlite:///{tmp_path / 'gk.db'}")
    assert len(keys) == 1 and len(keys.pop()) == 64


def test_concurrent_first_starts_agree_on_one_key_on_postgres(postgres: PostgresServer) -> None:
    keys = _concurrent_first_keys(postgres.create_database("signing"))
    assert len(keys) == 1 and len(keys.pop()) == 64


def test_a_configured_key_wins_over_the_stored_one(tmp_path: Path) -> None:
    app = create_app({"database_url": f"sqlite:///{tmp_path / 'gk.db'}", "policy_dir": POLICIES,
                      "secret_key": "configured"})
    app.extensions["gatekeeper"].db.upgrade()
    client = app.test_client()
    assert client.get("/login").status_code == 200
    assert app.secret_key == "configured"
    with app.extensions["gatekeeper"].db.reading() as db:
        assert get_signing_key(COOKIE_KEY, db=db) is None
