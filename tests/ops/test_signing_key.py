"""One signing key for every worker and replica: sign-in works on the first try, every time (issue 11 §1)."""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from gatekeeper import create_app
from gatekeeper.store.db import Database
from gatekeeper.store.signing import get_signing_key
from gatekeeper.web.security import COOKIE_KEY, shared_signing_key
from tests.conftest import POLICIES
from tests.ops.conftest import Server, prepare_database
from tests.support.services import PostgresServer

PASSWORD = "correct horse battery"
SIGN_INS = 20


def sign_in(browser: Any, base: str, *, check: str | None = None) -> None:
    """Sign in as alice in a fresh browser context; then, when asked, open another server's overview."""
    context = browser.new_context()
    context.set_default_timeout(10_000)
    try:
        page = context.new_page()
        page.goto(f"{base}/login")
        page.fill("input[name=username]", "alice")
        page.fill("input[name=password]", PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_selector("[data-testid=user]")
        assert page.url.rstrip("/") == base, page.url
        if check is not None:  # cookies are per host, not per port: the other server must accept this one
            page.goto(f"{check}/")
            assert page.locator("[data-testid=user]").inner_text().startswith("alice"), page.url
    finally:
        context.close()


@pytest.mark.slow
def test_twenty_fresh_sign_ins_against_four_workers_all_succeed(
        tmp_path: Path, servers: Callable[..., Server], browser: Any) -> None:
    url = f"sqlite:///{tmp_path / 'gk.db'}"
    prepare_database(url, users={"alice": PASSWORD})
    server = servers(database_url=url, workers=4)
    for _ in range(SIGN_INS):
        sign_in(browser, server.url)


@pytest.mark.slow
def test_twenty_fresh_sign_ins_across_two_servers_on_one_database(
        tmp_path: Path, servers: Callable[..., Server], browser: Any) -> None:
    url = f"sqlite:///{tmp_path / 'gk.db'}"
    prepare_database(url, users={"alice": PASSWORD})
    first, second = servers(database_url=url), servers(database_url=url)
    for n in range(SIGN_INS):
        here, there = (first, second) if n % 2 == 0 else (second, first)
        sign_in(browser, here.url, check=there.url)


def _key_of(url: str) -> str:
    db = Database(url)
    try:
        return shared_signing_key(db)
    finally:
        db.dispose()


def _concurrent_first_keys(url: str, processes: int = 6) -> set[str]:
    db = Database(url)
    db.upgrade()
    db.dispose()  # forked children must not share its connections
    start = multiprocessing.get_context("fork").Barrier(processes)
    with multiprocessing.get_context("fork").Pool(processes, initializer=_wait_for_all, initargs=(start,)) as pool:
        return set(pool.map(_key_of, [url] * processes, chunksize=1))


def _wait_for_all(start: Any) -> None:
    start.wait(timeout=30)  # every process is up before any asks for the key


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
    with app.extensions["gatekeeper"].db.reading() as session:
        assert get_signing_key(session, COOKIE_KEY) is None
