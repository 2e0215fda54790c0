"""The dashboard against real `gatekeeper serve` processes started with no secret key: sign-in works
every time across workers and replicas (issue 11 §1), and the no-scheduler banner comes and goes (§2)."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.servers import POLICIES, Server, prepare_database, server_env, server_pool

PASSWORD = "correct horse battery"
SIGN_INS = 20


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    """Start `gatekeeper serve` processes; every one is stopped when the test ends."""
    with server_pool(tmp_path) as start:
        yield start


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


def test_the_no_scheduler_banner_appears_and_goes_away_when_a_scheduler_starts(
        tmp_path: Path, servers: Callable[..., Server], page: Any) -> None:
    url = f"sqlite:///{tmp_path / 'gk.db'}"
    prepare_database(url, users={"alice": PASSWORD})
    server = servers(database_url=url)
    page.goto(f"{server.url}/login")
    assert page.locator("[data-testid=banner-scheduler]").count() == 0  # nothing is told before sign-in
    page.fill("input[name=username]", "alice")
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    banner = page.locator("[data-testid=banner-scheduler]")
    assert "No scheduler has ticked within 15s" in banner.inner_text()
    assert "gatekeeper scheduler" in banner.inner_text()
    page.goto(f"{server.url}/approvals")
    assert banner.is_visible()

    with open(tmp_path / "scheduler.log", "wb") as log:
        scheduler = subprocess.Popen([sys.executable, "-m", "gatekeeper.cli", "scheduler", "--interval", "1s"],
                                     env=server_env(url, POLICIES), stdout=log, stderr=subprocess.STDOUT)
    try:
        banner.wait_for(state="detached", timeout=20_000)  # the page's own refresh, no reload
        assert page.locator("[data-testid=banners]").inner_text().strip() == ""
    finally:
        scheduler.send_signal(signal.SIGTERM)
        scheduler.wait(timeout=20)
