"""`GET /v1/agents/{agent}/sessions` and `gatekeeper sessions`: where a release manager finds a session's id."""

from __future__ import annotations

import html
import json
import re
import time
from typing import Any

import pytest
from click.testing import CliRunner

from gatekeeper.cli import main
from gatekeeper.store import session_pages
from tests.support import seed
from tests.support.app import svc
from tests.support.dashboard import signed_in
from tests.support.runtime import Runtime

URL = "/v1/agents/bot/sessions"


def twin_run(runtime: Runtime, tools: list[str], *, passed: bool | None = None) -> str:
    """Run the policy's refund-request scenario in the twin with these calls; return the session id."""
    session = runtime.ok(runtime.client.post("/v1/sessions", json={
        "agent": "bot", "environment": "twin", "scenario": "refund-request"}, headers=runtime.agent))["session_id"]
    for tool in tools:
        runtime.decide(session, tool)
    runtime.ok(runtime.client.post(f"/v1/sessions/{session}/end", json={"status": "ok", "passed": passed},
                                   headers=runtime.agent))
    return session


def world(runtime: Runtime) -> dict[str, str]:
    """A rollout in twin: two live sessions (one ended), a passing and a failing twin run, newest last."""
    runtime.setup(stage="twin")
    live = runtime.session()["session_id"]
    runtime.decide(live, "search_kb", cost=0.02)
    ended = runtime.session()["session_id"]
    runtime.ok(runtime.client.post(f"/v1/sessions/{ended}/end", json={"status": "error"}, headers=runtime.agent))
    passing = twin_run(runtime, ["lookup_customer", "refund_payment", "send_email"])
    failing = twin_run(runtime, ["lookup_customer", "update_ticket"])
    return {"live": live, "ended": ended, "passing": passing, "failing": failing}


def ids(answer: dict[str, Any]) -> list[str]:
    return [row["session_id"] for row in answer["items"]]


def test_sessions_are_listed_newest_first_with_their_facts_and_filters(runtime: Runtime,
                                                                      viewer: dict[str, str]) -> None:
    made = world(runtime)
    page = runtime.ok(runtime.client.get(URL, headers=runtime.rm))
    assert ids(page) == [made["failing"], made["passing"], made["ended"], made["live"]]
    assert page["next"] is None and page["limit"] == 50
    first = page["items"][0]
    assert {k: first[k] for k in ("agent", "version", "arm", "stage", "environment", "scenario", "status", "passed",
                                  "tool_calls")} == {
        "agent": "bot", "version": "v2", "arm": "candidate", "stage": "twin", "environment": "twin",
        "scenario": "refund-request", "status": "ok", "passed": False, "tool_calls": 2}
    assert first["ended_at"] is not None and first["started_at"] <= first["ended_at"]
    live = page["items"][3]
    assert (live["environment"], live["status"], live["passed"], live["ended_at"], live["spend"]) == (
        "live", "open", None, None, 0.02)

    def listed(**query: str) -> list[str]:
        return ids(runtime.ok(runtime.client.get(URL, query_string=query, headers=runtime.rm)))

    assert listed(environment="twin") == [made["failing"], made["passing"]]
    assert listed(environment="live") == [made["ended"], made["live"]]
    assert listed(status="error") == [made["ended"]]
    assert listed(scenario="refund-request", status="ok") == [made["failing"], made["passing"]]
    assert listed(arm="stable") == [made["ended"], made["live"]]  # in twin, live sessions all run the stable version
    assert listed(arm="stable", environment="twin") == [] and listed(scenario="nothing-like-it") == []
    assert ids(runtime.ok(runtime.client.get(URL, headers=viewer))) == ids(page)


def test_pages_follow_the_cursor_through_sessions_that_started_at_the_same_instant(runtime: Runtime) -> None:
    runtime.setup(stage="twin")
    service = svc(runtime.client.application)
    at = time.time() - 60
    started = {seed.live_session(service, "bot", at=at - n // 3, arm="stable", status="ok"): at - n // 3
               for n in range(8)}  # three at a time share one instant
    walked, before, pages = [], None, 0
    while pages < 10:
        query = {"limit": "3", **({"before": before} if before else {})}
        page = runtime.ok(runtime.client.get(URL, query_string=query, headers=runtime.rm))
        walked += ids(page)
        pages += 1
        before = page["next"]
        if before is None:
            break
    assert pages == 3 and walked == sorted(started, key=lambda key: (started[key], key), reverse=True)


def test_a_filtered_page_looks_at_a_bounded_window_and_twin_runs_have_their_own_index(
        runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    made = world(runtime)
    service = svc(runtime.client.application)
    now = time.time()
    newer = [seed.live_session(service, "bot", at=now + n, arm="candidate", status="ok") for n in range(1, 6)]
    monkeypatch.setattr(session_pages, "SCAN_ROWS", 4)  # a window of 4 sessions stands in for 5,000

    def walk(**query: str) -> tuple[list[str], int]:
        found, before, pages = [], None, 0
        while pages < 10:
            page = runtime.ok(runtime.client.get(URL, query_string={**query, **({"before": before} if before else {})},
                                                 headers=runtime.rm))
            found += ids(page)
            pages += 1
            before = page["next"]
            if before is None:
                break
        return found, pages

    # 4 newer live sessions, then the 5th with the two twin runs and the errored one, then the last.
    assert walk(status="error") == ([made["ended"]], 3)
    assert walk(environment="twin") == ([made["failing"], made["passing"]], 1)  # no live session in the way
    assert walk(environment="twin", limit="1") == ([made["failing"], made["passing"]], 2)
    unfiltered = runtime.ok(runtime.client.get(URL, query_string={"limit": "6"}, headers=runtime.rm))
    assert ids(unfiltered)[:5] == newer[::-1]  # without filters the window does not apply


@pytest.mark.parametrize("db_url", ["sqlite", "postgres"], indirect=True)
def test_bad_filters_and_cursors_are_refused_naming_the_field_and_change_nothing(runtime: Runtime) -> None:
    made = world(runtime)
    before = runtime.ok(runtime.client.get(URL, headers=runtime.rm))
    bad = {"limit": ["0", "501", "ten"], "environment": ["shadow", ""], "arm": ["both"], "status": ["closed"],
           "scenario": ["a\x00b", "x" * 201], "before": ["%%%", "a b", "a" * 41, "", "x\x00"], "offset": ["10"]}
    for field, values in bad.items():
        for value in values:
            answer = runtime.client.get(URL, query_string={field: value}, headers=runtime.rm)
            assert answer.status_code == 400, (field, value, answer.get_json())
            error = answer.get_json()["error"]
            named = "query" if "\x00" in value else field  # the edge guard refuses a NUL in any query string
            assert (error["code"], error["field"]) == ("bad_request", named), (field, value, error)
    other = runtime.ok(runtime.client.post("/v1/agents", json={"name": "other-bot", "policy": "hotpath"},
                                           headers=runtime.rm))
    assert other["name"] == "other-bot"
    for unknown in ("0" * 24, "not-a-session"):
        answer = runtime.client.get(URL, query_string={"before": unknown}, headers=runtime.rm)
        assert (answer.status_code, answer.get_json()["error"]["field"]) == (404, "before")
    elsewhere = runtime.client.get("/v1/agents/other-bot/sessions", query_string={"before": made["live"]},
                                   headers=runtime.rm)
    assert elsewhere.status_code == 404  # another agent's session is no place in this listing
    assert runtime.ok(runtime.client.get(URL, headers=runtime.rm)) == before  # nothing changed
    assert runtime.client.get("/v1/agents/nobody/sessions", headers=runtime.rm).status_code == 404
    assert runtime.client.get("/v1/agents/other-bot/sessions", headers=runtime.agent).status_code == 403
    assert ids(runtime.ok(runtime.client.get(URL, headers=runtime.agent)))[0] == made["failing"]
    assert runtime.client.get(URL).status_code == 401


def test_the_sessions_command_lists_filters_and_pages(runtime: Runtime, live_url: str) -> None:
    made = world(runtime)
    token = runtime.rm["Authorization"].split()[1]

    def cli(*args: str) -> str:
        result = CliRunner().invoke(main, ["sessions", "bot", *args, "--url", live_url, "--token", token])
        assert result.exit_code == 0, result.output
        return result.stdout

    lines = cli("--environment", "twin").splitlines()
    assert lines[0].split() == ["STARTED", "SESSION", "VERSION", "ARM", "STAGE", "ENV", "SCENARIO", "STATUS",
                                "PASSED", "CALLS", "SPEND"]
    assert [line.split()[2:11] for line in lines[2:]] == [
        [made["failing"], "v2", "candidate", "twin", "twin", "refund-request", "ok", "failed", "2"],
        [made["passing"], "v2", "candidate", "twin", "twin", "refund-request", "ok", "passed", "1"]]
    # CALLS counts the calls let through: the irreversible ones waited for a person in the twin too.
    assert len(lines) == 4  # no "more:" line: that was every twin run
    first = cli("--limit", "1", "--environment", "twin").splitlines()
    assert first[2].split()[2] == made["failing"] and first[-1].startswith("more: gatekeeper sessions bot --before ")
    assert first[-1].endswith(" --environment twin")
    rest = json.loads(cli(*first[-1].split()[4:6], "--environment", "twin", "--json"))
    assert ids(rest) == [made["passing"]] and rest["next"] is None
    refused = CliRunner().invoke(main, ["sessions", "bot", "--before", "junk", "--url", live_url, "--token", token])
    assert refused.exit_code == 1 and refused.stderr.strip() == (
        "gatekeeper: 404 not_found: no session 'junk' of this agent to list sessions before (field before)")


def test_the_dashboard_lists_an_agents_sessions_each_linked_to_its_trace(
        runtime: Runtime, users: dict[str, str]) -> None:
    made = world(runtime)
    page = runtime.client.application.test_client()
    signed_in(page, "victor")
    agent_page = page.get("/agents/bot").get_data(as_text=True)
    assert 'href="/agents/bot/sessions" data-testid="sessions-link"' in agent_page
    listed = page.get("/agents/bot/sessions").get_data(as_text=True)
    rows = re.findall(r'<tr data-session="([^"]+)">\s*<td><a href="/sessions/([^"]+)">', listed)
    assert rows == [(made[k], made[k]) for k in ("failing", "passing", "ended", "live")]
    assert 'data-testid="older"' not in listed
    twin = page.get("/agents/bot/sessions?environment=twin&limit=1").get_data(as_text=True)
    assert re.findall(r'data-session="([^"]+)"', twin) == [made["failing"]]
    older = re.search(r'data-testid="older" href="([^"]+)"', twin)
    assert older and "environment=twin" in older.group(1)
    rest = page.get(html.unescape(older.group(1))).get_data(as_text=True)
    assert re.findall(r'data-session="([^"]+)"', rest) == [made["passing"]] and 'fail-text">failed' not in rest
    assert page.get("/agents/bot/sessions?environment=shadow").status_code == 400
    assert page.get("/agents/nobody/sessions").status_code == 404
    assert page.get(f"/sessions/{made['failing']}").status_code == 200
