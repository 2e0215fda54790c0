"""Fixtures of the dashboard tests: users, the real app on a loopback port, real headless Chromium."""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from gatekeeper.store.tokens import create_user
from tests.support.app import svc
from tests.support.http import serve_app

CHROMIUM = "/usr/bin/chromium"
LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
               "--disable-sync", "--no-first-run", "--disable-quic"]
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
PASSWORDS = {"alice": "alice-password-1", "victor": "victor-password-1"}


def missing(what: str) -> None:
    """Fail under CI=true, else skip loudly: a test that needs `what` cannot run without it."""
    message = f"MISSING {what}: this dashboard test cannot run"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture
def users(app: Flask) -> dict[str, str]:
    """Create alice (release manager) and victor (viewer); return their passwords."""
    with svc(app).db.transaction() as db:
        create_user("alice", password=PASSWORDS["alice"], role="release_manager", now=time.time(), db=db)
        create_user("victor", password=PASSWORDS["victor"], role="viewer", now=time.time(), db=db)
    return PASSWORDS


def signed_in(client: FlaskClient, username: str) -> str:
    """Sign `client` in through the real form; return the session's CSRF token."""
    page = client.get("/login").get_data(as_text=True)
    response = client.post("/login", data={"username": username, "password": PASSWORDS[username],
                                           "csrf_token": csrf_of(page)})
    assert response.status_code == 303, response.get_data(as_text=True)
    return csrf_of(client.get("/").get_data(as_text=True))


def csrf_of(html: str) -> str:
    """Return the CSRF token a page carries in its meta tag."""
    found = re.search(r'name="csrf-token" content="([^"]+)"', html)
    assert found, "the page carries no CSRF token"
    return found.group(1)


@dataclass
class LiveServer:
    url: str
    app: Flask


@pytest.fixture
def live_server(app: Flask) -> Iterator[LiveServer]:
    """Serve the real app on a free loopback port in a thread; stop it afterwards."""
    with serve_app(app) as url:
        yield LiveServer(url, app)


@pytest.fixture(scope="package")
def browser() -> Iterator[Any]:
    """One headless Debian Chromium per test package (launching costs about a second).

    Not one per session: Playwright's sync API keeps its event loop set on the main thread until it
    stops, and every later test calling asyncio.run() (the async SDK's) would fail.
    """
    if not Path(CHROMIUM).exists():
        missing(f"{CHROMIUM} (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing("the playwright Python package")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A fresh browser context (own cookies) and page, laptop-sized, with bounded waits."""
    context = browser.new_context(viewport={"width": 1440, "height": 900})
    context.set_default_timeout(20_000)  # bounded; a loaded 2-core host has taken over 10 s for one POST and redirect
    try:
        yield context.new_page()
    finally:
        context.close()


def browser_sign_in(page: Any, base: str, username: str) -> None:
    """Sign in through the real form in the browser."""
    page.goto(f"{base}/login")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", PASSWORDS[username])
    page.click("button[type=submit]")
    page.wait_for_selector("[data-testid=user]")


def screenshot(page: Any, name: str) -> Path:
    """Save a full-page screenshot to tests/artifacts/ (and to docs/screenshots/ when asked)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    if os.environ.get("GATEKEEPER_UPDATE_SCREENSHOTS") == "1":  # refresh the README's pictures
        docs = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
        docs.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, docs / f"{name}.png")
    return path


AXE_TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]


def axe_violations(page: Any) -> list[str]:
    """Run axe-core (shipped inside axe-playwright-python, no CDN) on the page; return its A/AA violations."""
    try:
        from axe_playwright_python.sync_playwright import Axe
    except ImportError:
        missing("the axe-playwright-python package")
    results = Axe().run(page, options={"runOnly": {"type": "tag", "values": AXE_TAGS},
                                       "resultTypes": ["violations"]})
    return [f"{v['id']} ({v['impact']}): {v['help']} at "
            + "; ".join(f"{' '.join(map(str, n['target']))} [{n.get('failureSummary', '')[:160]}]"
                        for n in v["nodes"][:4])
            for v in results.response["violations"]]
