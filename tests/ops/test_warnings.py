"""The scheduler is visible and a broken policy is loud: GET /v1/scheduler, /readyz, the dashboard's
banners and `gatekeeper status` (issue 11 §2 and §6)."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from flask import Flask
from flask.testing import FlaskClient

from gatekeeper.cli import main
from gatekeeper.metric_sources import InMemorySource
from gatekeeper.scheduler import GateScheduler
from gatekeeper.scheduler_status import judge
from gatekeeper.store.tokens import create_user
from gatekeeper.web.banners import code_spans
from tests.support.app import POLICIES, svc
from tests.support.http import serve_app

PASSWORD = "correct horse battery"
NOW = 1_700_000_000.0


@pytest.fixture
def policy_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "policies"
    shutil.copytree(POLICIES, folder)
    return folder


@pytest.fixture
def app_overrides(db_url: str, policy_folder: Path) -> dict[str, Any]:
    return {"database_url": db_url, "policy_dir": policy_folder, "policy_reload_s": 0.0}


@pytest.fixture
def dashboard(app: Flask) -> FlaskClient:
    """A test client signed in to the dashboard as a release manager."""
    with svc(app).db.transaction() as db:
        create_user("alice", password=PASSWORD, role="release_manager", now=time.time(), db=db)
    client = app.test_client()
    client.get("/login")
    with client.session_transaction() as cookie:
        token = cookie["csrf_token"]
    assert client.post("/login", data={"username": "alice", "password": PASSWORD,
                                       "csrf_token": token}).status_code == 303
    return client


@pytest.fixture
def live(app: Flask) -> Iterator[str]:
    with serve_app(app) as url:
        yield url


def tick(app: Flask, *, at: float, interval_s: float = 1.0) -> None:
    """Run one scheduler tick at `at` (it leads: nobody else holds the lease)."""
    scheduler = GateScheduler(svc(app), InMemorySource(), interval_s=interval_s, holder="host:42:abc",
                              clock=lambda: at)
    assert scheduler.tick().leader


def status_output(url: str, token: dict[str, str]) -> str:
    result = CliRunner().invoke(main, ["status", "--url", url, "--token", token["Authorization"].split()[1]])
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.parametrize(("last_tick", "interval", "healthy", "lag"), [
    (None, None, False, None),        # never ticked: the default 5 s interval, so "none within 15s"
    (NOW - 2, 1.0, True, 2.0),
    (NOW - 3, 1.0, True, 3.0),        # three intervals is still healthy
    (NOW - 3.5, 1.0, False, 3.5),
    (NOW - 14, 5.0, True, 14.0),
    (NOW + 1, 5.0, True, 0.0),        # a clock a little ahead is no lag
])
def test_a_scheduler_is_healthy_while_it_ticked_within_three_intervals(
        last_tick: float | None, interval: float | None, healthy: bool, lag: float | None) -> None:
    health = judge(leader=None, last_holder="h", last_tick_at=last_tick, leading_since=last_tick,
                   interval_s=interval, now=NOW)
    assert (health.healthy, health.lag_s) == (healthy, lag)
    assert health.limit_s == 3 * (interval or 5.0)
    assert (health.problem == "") == healthy


def test_no_scheduler_shows_in_the_api_readyz_the_dashboard_and_status(
        app: Flask, client: FlaskClient, dashboard: FlaskClient, live: str, viewer: dict[str, str],
        rm: dict[str, str], make_token: Callable[..., dict[str, str]]) -> None:
    view = client.get("/v1/scheduler", headers=viewer)
    assert view.status_code == 200
    assert view.json["healthy"] is False and view.json["leader"] is None and view.json["last_tick_at"] is None
    assert "no scheduler has ever ticked" in view.json["problem"] and "--with-scheduler" in view.json["problem"]
    assert client.get("/v1/scheduler").status_code == 401
    assert client.get("/v1/scheduler", headers=make_token("agent", agent="support-bot")).status_code == 403
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json["checks"]["scheduler"] == "none within 15s"
    assert ready.json["warnings"][0].startswith("No scheduler has ticked within 15s: no scheduler has ever ticked")
    for page in ("/", "/approvals", "/policies", "/partials/banners"):
        html = dashboard.get(page).get_data(as_text=True)
        assert 'data-testid="banner-scheduler"' in html and "No scheduler has ticked within 15s" in html, page
        assert "run <code>gatekeeper scheduler</code>, or <code>gatekeeper serve --with-scheduler</code>" in html
    assert "warning: No scheduler has ticked within 15s" in status_output(live, rm)

    tick(app, at=time.time())
    view = client.get("/v1/scheduler", headers=viewer).json
    assert view["healthy"] is True and view["leader"] == view["last_holder"] == "host:42:abc"
    assert view["interval_s"] == 1.0 and 0 <= view["lag_s"] < 3 and view["problem"] == ""
    assert client.get("/readyz").json["checks"]["scheduler"].startswith("ok: host:42:abc ticked")
    assert client.get("/readyz").json["warnings"] == []
    assert "banner-scheduler" not in dashboard.get("/").get_data(as_text=True)
    assert "warning:" not in status_output(live, rm)

    tick(app, at=time.time() - 10)  # its last tick is ten intervals old: missing again
    view = client.get("/v1/scheduler", headers=viewer).json
    assert view["healthy"] is False and "the last tick was 10s ago" in view["problem"]
    assert client.get("/readyz").json["checks"]["scheduler"] == "none within 3s"
    assert "banner-scheduler" in dashboard.get("/").get_data(as_text=True)


def test_a_policy_file_broken_on_reload_is_loud_and_the_last_good_revision_stays(
        app: Flask, client: FlaskClient, dashboard: FlaskClient, live: str, rm: dict[str, str],
        policy_folder: Path) -> None:
    good = svc(app).policies.get("support-default").revision
    path = policy_folder / "support-default.yaml"
    path.write_text(path.read_text().replace("tiers: [1, 5]", "tiers: [5, 1]", 1)
                    .replace("max_error_rate: 0.02", "max_error_rate: 2", 1))
    html = dashboard.get("/").get_data(as_text=True)
    assert 'data-testid="banner-policy"' in html and "Policy file support-default.yaml failed to load" in html
    assert "tiers" in html and f"last good revision {good} of policy support-default stays in force" in html
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json["checks"]["policies"] == "3 loaded; 1 file failed to load"
    policy_lines = [w for w in ready.json["warnings"] if w.startswith("Policy file")]
    assert len(policy_lines) == 1 and "support-default.yaml" in policy_lines[0] and good in policy_lines[0]
    assert "warning: Policy file support-default.yaml failed to load" in status_output(live, rm)
    assert svc(app).policies.get("support-default").revision == good  # still in force

    path.write_text((POLICIES / "support-default.yaml").read_text())  # fixed
    assert "banner-policy" not in dashboard.get("/").get_data(as_text=True)
    assert client.get("/readyz").json["checks"]["policies"] == "3 loaded"


def test_banner_text_is_escaped_and_only_backquotes_become_code() -> None:
    assert str(code_spans("run `a <b>` & <i>x</i>")) == "run <code>a &lt;b&gt;</code> &amp; &lt;i&gt;x&lt;/i&gt;"
