"""A decision on SQLite without reading the session first: the reservation checks the predicted facts.

The process predicts a session's facts from its last read of them; the reservation's `UPDATE` takes
the call only while the rollout's stage and state are as predicted (and the caps allow it), so a
stale prediction or a refusing cap records nothing and the transaction's way answers. Statements are
counted with sqlite3's trace callback on the hot path's own connection.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from gatekeeper import decisions
from gatekeeper.core.budgets import to_micros
from gatekeeper.errors import Conflict
from gatekeeper.store.hot_path import HotPath
from tests.support.app import svc
from tests.support.runtime import WITH_WIRE_MONEY, Runtime, counts, policy_folder


@pytest.fixture
def policy_dir(tmp_path: Path) -> Path:
    """The hotpath policy with one more irreversible tool, which no sequence rule names."""
    return policy_folder(tmp_path, WITH_WIRE_MONEY)


@contextlib.contextmanager
def traced(hot: HotPath) -> Iterator[list[str]]:
    """Collect the statements this thread's hot-path connection runs inside the block."""
    connection = hot._opened()[0]
    found: list[str] = []
    connection.set_trace_callback(found.append)
    try:
        yield found
    finally:
        connection.set_trace_callback(None)


def facts_read(statements: list[str]) -> int:
    """Count the reads of a session's facts (the long way's first statement)."""
    return sum(1 for sql in statements if sql.lstrip().startswith("SELECT") and "JOIN agents" in sql)


def _decide(app: Flask, session: str, tool: str = "search_kb", cost: float = 0.01, **ask: Any) -> decisions.Decided:
    return decisions.decide(svc(app), decisions.Ask(session, tool, to_micros(cost), **ask), scope="bot",
                            now=time.time())


def test_a_common_decision_reserves_without_reading_the_session(runtime: Runtime, app: Flask) -> None:
    runtime.setup("canary", 0)
    session = runtime.session(candidate=True)["session_id"]
    hot = svc(app).hot
    with traced(hot) as first:
        assert _decide(app, session).verdict.verdict == "allow"  # nothing predicted yet: the long way
    assert facts_read(first) == 1
    with traced(hot) as trace:
        plain = _decide(app, session)
        argued = _decide(app, session, arguments={"query": "refund"})
    assert [d.verdict.verdict for d in (plain, argued)] == ["allow", "allow"]
    assert facts_read(trace) == 0
    assert [sql.split()[0] for sql in trace] == ["BEGIN", "UPDATE", "INSERT", "COMMIT"] * 2, trace
    assert (plain.remaining_calls, argued.remaining_calls) == (18, 17)
    assert counts(app, "SELECT tool_calls, spend_micros FROM sessions WHERE id = :id", id=session) == (3, 30_000)
    stored = counts(app, "SELECT stage, remaining_tool_calls, remaining_spend_micros, arguments IS NOT NULL"
                         " FROM decisions WHERE id = :id", id=argued.decision_id)
    assert tuple(stored) == ("canary", 17, 470_000, 1)
    with traced(hot) as retried:  # a request id, a sequence rule or an approval needs more than the session's row
        assert _decide(app, session, request_id="r1").verdict.verdict == "allow"
        assert _decide(app, session, "send_email").verdict.verdict == "approval_required"
    assert facts_read(retried) == 2


def test_a_stale_prediction_records_nothing_and_the_long_way_answers(runtime: Runtime, app: Flask) -> None:
    runtime.setup("canary", 0)
    session = runtime.session(candidate=True)["session_id"]
    for _ in range(2):
        _decide(app, session)
    runtime.act("kill")  # the rollout moves under the prediction (another unit of work, as another process would)
    with traced(svc(app).hot) as trace:
        assert _decide(app, session).verdict.reason == "kill_switch"
    # The predicted allow's reservation took nothing; the long way read the facts and denied.
    assert [sql.split()[0] for sql in trace][:4] == ["BEGIN", "UPDATE", "COMMIT", "BEGIN"]
    assert facts_read(trace) == 1
    assert counts(app, "SELECT tool_calls FROM sessions WHERE id = :id", id=session)[0] == 2
    assert counts(app, "SELECT count(*) FROM decisions WHERE session_id = :id AND reason = 'kill_switch'",
                  id=session)[0] == 1
    runtime.ok(runtime.client.post(f"/v1/sessions/{session}/end", json={}, headers=runtime.agent))
    with pytest.raises(Conflict, match="has ended"):
        _decide(app, session)
    assert counts(app, "SELECT count(*) FROM decisions WHERE session_id = :id", id=session)[0] == 3


def test_a_cap_that_refuses_falls_back_to_the_cap_reason(runtime: Runtime, app: Flask) -> None:
    runtime.setup("canary", 0)
    calls, spend = runtime.session(candidate=True)["session_id"], runtime.session(candidate=True)["session_id"]
    assert [_decide(app, calls).verdict.verdict for _ in range(20)] == ["allow"] * 20  # canary: 20 calls, $0.50
    refused = _decide(app, calls)
    assert (refused.verdict.verdict, refused.verdict.reason, refused.remaining_calls) == ("deny", "cap_tool_calls", 0)
    assert [_decide(app, spend, cost=0.2).verdict.reason for _ in range(3)] == ["", "", "cap_spend"]
    assert counts(app, "SELECT tool_calls, spend_micros FROM sessions WHERE id = :id", id=calls) == (20, 200_000)
    assert counts(app, "SELECT tool_calls, spend_micros FROM sessions WHERE id = :id", id=spend) == (2, 400_000)
    assert counts(app, "SELECT count(*) FROM decisions WHERE session_id IN (:a, :b)", a=calls, b=spend)[0] == 24


def _session(runtime: Runtime, who: str) -> str:
    if who == "twin session":
        return str(runtime.session(environment="twin")["session_id"])
    if who == "stable":
        return str(runtime.session(candidate=False, percent=1.0)["session_id"])
    return str(runtime.session(candidate=True, percent={"canary": 1.0, "expansion": 10.0}[who])["session_id"])


@pytest.mark.parametrize(("stage", "who"), [("twin", "twin session"), ("canary", "canary"),
                                            ("expansion", "expansion"), ("canary", "stable")])
def test_the_predicted_way_answers_and_records_what_the_long_way_does(runtime: Runtime, app: Flask, stage: str,
                                                                      who: str) -> None:
    runtime.setup(stage, 0)
    session = _session(runtime, who)
    for tool in ("search_kb", "update_ticket", "wire_money"):
        long_way = _decide(app, session, tool, preview="p")
        if long_way.verdict.verdict == "approval_required":
            continue  # opens an approval: always the long way
        with traced(svc(app).hot) as trace:
            predicted = _decide(app, session, tool, preview="p")
        assert facts_read(trace) == 0
        assert (predicted.verdict, predicted.labels, predicted.message) == (long_way.verdict, long_way.labels,
                                                                            long_way.message)
        assert predicted.remaining_calls == long_way.remaining_calls - 1
        assert (predicted.chaos is None) == (long_way.chaos is None)
        rows = [counts(app, "SELECT session_id, agent_id, rollout_id, version, arm, stage, tool, tool_class,"
                            " cost_micros, verdict, reason, would_verdict, would_reason, approval_id, preview"
                            " FROM decisions WHERE id = :id", id=d.decision_id) for d in (long_way, predicted)]
        assert tuple(rows[0]) == tuple(rows[1])
