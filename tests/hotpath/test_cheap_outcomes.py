"""Outcome reports on the hot path: exactly one kill-switch trip under concurrency, bucketed windows,
and the token revocation mark checked inside the decision's and the outcome's own transaction."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from flask import Flask

from gatekeeper import decisions
from gatekeeper.core.budgets import to_micros
from gatekeeper.store import outcome_statements
from tests.support.app import svc
from tests.support.runtime import Runtime, counts

ON_BOTH = pytest.mark.parametrize("db_url", ["sqlite", "postgres"], indirect=True)
T0 = 1_900_000_000.0


def _allowed(app: Flask, sessions_: list[str], per_session: int, *, now: float) -> list[str]:
    found = []
    for session in sessions_:
        for _ in range(per_session):
            decided = decisions.decide(svc(app), decisions.Ask(session, "search_kb", to_micros(0.001)),
                                       scope="bot", now=now)
            assert decided.verdict.verdict == "allow", decided.verdict
            found.append(decided.decision_id)
    return found


@ON_BOTH
def test_concurrent_reports_that_cross_trip_the_kill_switch_exactly_once(runtime: Runtime, app: Flask) -> None:
    runtime.setup("expansion", 3)  # 100%: every live session is a candidate
    sessions_ = [runtime.session(session_key=f"s{n}")["session_id"] for n in range(4)]
    ids = _allowed(app, sessions_, 12, now=T0)
    tripped: list[bool] = []
    failures: list[BaseException] = []
    start = threading.Barrier(8)

    def report(part: list[str]) -> None:
        try:
            start.wait(timeout=30)
            for decision_id in part:  # every one an error: each report from the 10th on crosses
                tripped.append(decisions.report_outcome(svc(app), decision_id, scope="bot", status="error",
                                                        actual_micros=None, latency_ms=None,
                                                        now=T0 + 1).kill_switch_tripped)
        except BaseException as exc:  # noqa: BLE001 - reported below
            failures.append(exc)

    threads = [threading.Thread(target=report, args=(ids[n::8],)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not failures, failures
    assert len(tripped) == len(ids) == 48 and tripped.count(True) == 1
    assert runtime.rollout()["state"] == "killed"
    kills = counts(app, "SELECT count(*) FROM transitions WHERE rollout_id = :r AND action = 'kill'",
                   r=runtime.rollout_id)
    assert kills[0] == 1
    # Every report was counted once, none lost to a concurrent one.
    assert counts(app, "SELECT sum(calls), sum(errors) FROM kill_switch_counts WHERE rollout_id = :r",
                  r=runtime.rollout_id) == (48, 48)


def test_the_window_sums_only_its_buckets_and_the_ring_stays_bounded(runtime: Runtime, app: Flask) -> None:
    runtime.setup("expansion", 3)
    session = runtime.session(session_key="ring")["session_id"]
    ids = _allowed(app, [session], 30, now=T0)
    # One ok outcome a second for 20 s, then one every 10 s: at T0+70 and T0+80 the ring (64 one-second
    # slots) wraps onto the buckets of T0+6 and T0+16, long out of the window, instead of growing.
    times = [T0 + n for n in range(20)] + [T0 + 20 + 10 * n for n in range(10)]
    for decision_id, at in zip(ids, times, strict=True):
        decisions.report_outcome(svc(app), decision_id, scope="bot", status="ok", actual_micros=None,
                                 latency_ms=None, now=at)
    assert counts(app, "SELECT count(*) FROM kill_switch_counts")[0] == 28
    with svc(app).hot.transaction() as tx:
        # At T0+110 the window starts at T0+50: the reports at 50, 60, ..., 110 (7 of them).
        assert outcome_statements.window_counts(tx, runtime.rollout_id, window_s=60, now=T0 + 110) == (7, 0)
        assert outcome_statements.window_counts(tx, runtime.rollout_id, window_s=60, now=T0 + 500) == (0, 0)
        # A window starting inside a bucket counts that bucket whole: at T0+140.5, T0+80 .. T0+110.
        assert outcome_statements.window_counts(tx, runtime.rollout_id, window_s=60, now=T0 + 140.5) == (4, 0)
    more = [runtime.session(session_key=f"ring{n}")["session_id"] for n in range(2)]
    for n, decision_id in enumerate(_allowed(app, more, 40, now=T0)):  # 80 seconds in a row
        decisions.report_outcome(svc(app), decision_id, scope="bot", status="error" if n % 2 else "ok",
                                 actual_micros=None, latency_ms=None, now=T0 + 1000 + n)
    assert counts(app, "SELECT count(*) FROM kill_switch_counts")[0] == outcome_statements.SLOTS


@ON_BOTH
def test_a_revoked_token_is_refused_at_once_without_a_mark_read_per_request(runtime: Runtime, app: Flask,
                                                                            monkeypatch: Any) -> None:
    runtime.setup("canary", 0)
    session = runtime.session(candidate=False)["session_id"]
    runtime.decide(session, "search_kb")  # the agent's token is now cached
    reads = []
    mark = svc(app).tokens.mark
    original = mark.read
    monkeypatch.setattr(mark, "read", lambda: reads.append(1) or original())
    decided = [runtime.decide(session, "search_kb")["decision_id"] for _ in range(5)]
    for decision_id in decided:
        runtime.report(decision_id, "ok")
    assert reads == []  # the mark came with each transaction's own statement
    [token] = [t for t in runtime.ok(runtime.client.get("/v1/tokens", headers=runtime.rm)) if t["name"] == "bot-token"]
    runtime.ok(runtime.client.post(f"/v1/tokens/{token['id']}/revoke", headers=runtime.rm))
    used = counts(app, "SELECT tool_calls FROM sessions WHERE id = :id", id=session)[0]
    refused = runtime.client.post("/v1/decisions", json={"session_id": session, "tool": "search_kb", "cost": 0.01},
                                  headers=runtime.agent)
    assert refused.status_code == 401 and refused.get_json()["error"]["message"] == "unknown or revoked token"
    assert counts(app, "SELECT tool_calls FROM sessions WHERE id = :id", id=session)[0] == used  # nothing reserved
    fresh = _allowed(app, [session], 1, now=T0)[0]
    refused = runtime.client.post(f"/v1/decisions/{fresh}/outcome", json={"status": "ok"}, headers=runtime.agent)
    assert refused.status_code == 401
    assert counts(app, "SELECT outcome_status FROM decisions WHERE id = :id", id=fresh)[0] is None
