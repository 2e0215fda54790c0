"""A decision on Postgres in one statement round trip (issue 17 item 5), counted on the wire by libpq's trace.

The process predicts a session's facts from its last read of them; a stale prediction (the rollout moved,
the session ended, a cap refuses) records nothing and goes the transaction's way, which answers.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from psycopg import pq

from gatekeeper import decisions
from gatekeeper.core.budgets import to_micros
from gatekeeper.errors import Conflict
from gatekeeper.store.hot_path import HotPath
from tests.support.app import svc
from tests.support.runtime import (
    WITH_WIRE_MONEY,
    Runtime,
    assert_exact,
    counts,
    hammer,
    open_sessions,
    policy_folder,
)
from tests.support.servers import Server

ON_POSTGRES = pytest.mark.parametrize("db_url", ["postgres"], indirect=True)


@pytest.fixture
def policy_dir(tmp_path: Path) -> Path:
    """The hotpath policy with one more irreversible tool, which no sequence rule names."""
    return policy_folder(tmp_path, WITH_WIRE_MONEY)


@contextlib.contextmanager
def wire(hot: HotPath, tmp_path: Path) -> Iterator[list[str]]:
    """Trace the protocol messages of this thread's hot-path connection; the lines are there after the block."""
    connection = hot._opened()[0]
    lines: list[str] = []
    path = tmp_path / f"wire{time.monotonic_ns()}.log"
    with path.open("w") as out:
        connection.pgconn.trace(out.fileno())
        connection.pgconn.set_trace_flags(pq.Trace.SUPPRESS_TIMESTAMPS)
        try:
            yield lines
        finally:
            connection.pgconn.untrace()
    lines.extend(path.read_text().splitlines())


def round_trips(lines: list[str]) -> int:
    """Count the times the server said it was ready for the next query: one per round trip."""
    return sum(1 for line in lines if line.startswith("B") and "ReadyForQuery" in line)


def statements(lines: list[str]) -> list[str]:
    """Return the statements sent: simple queries, and executions of the extended protocol."""
    return [line for line in lines if line.startswith("F") and ("\tQuery\t" in line or "\tExecute\t" in line)]


def _decide(app: Flask, session: str, tool: str = "search_kb", cost: float = 0.01, **ask: Any) -> decisions.Decided:
    return decisions.decide(svc(app), decisions.Ask(session, tool, to_micros(cost), **ask), scope="bot",
                            now=time.time())


@ON_POSTGRES
def test_a_common_decision_is_one_statement_round_trip(runtime: Runtime, app: Flask, tmp_path: Path) -> None:
    runtime.setup("canary", 0)
    session = runtime.session(candidate=True)["session_id"]
    hot = svc(app).hot
    with wire(hot, tmp_path) as unknown:
        assert _decide(app, session).verdict.verdict == "allow"  # the first call reads the facts: the long way
    assert round_trips(unknown) == 3
    with wire(hot, tmp_path) as trace:
        plain = _decide(app, session)
        retried = [_decide(app, session, request_id="r1") for _ in range(2)]
        argued = _decide(app, session, arguments={"query": "refund"})
    assert [d.verdict.verdict for d in (plain, *retried, argued)] == ["allow"] * 4
    assert round_trips(trace) == 4 and len(statements(trace)) == 4, trace
    assert not [line for line in trace if "BEGIN" in line or "COMMIT" in line]
    assert (retried[1].replayed, retried[1].decision_id) == (True, retried[0].decision_id)
    assert (plain.remaining_calls, retried[0].remaining_calls, argued.remaining_calls) == (18, 17, 16)
    assert counts(app, "SELECT tool_calls, spend_micros FROM sessions WHERE id = :id", id=session) == (4, 40_000)
    stored = counts(app, "SELECT stage, remaining_tool_calls, remaining_spend_micros FROM decisions"
                         " WHERE request_id = 'r1'")
    assert tuple(stored) == ("canary", 17, 470_000)
    assert counts(app, "SELECT arguments FROM decisions WHERE id = :id", id=argued.decision_id)[0] is not None
    with wire(hot, tmp_path) as ruled:  # a sequence rule and an approval need more than the session's row
        assert _decide(app, session, "send_email").verdict.verdict == "approval_required"
    assert round_trips(ruled) > 1


@ON_POSTGRES
def test_a_stale_prediction_falls_back_and_answers_correctly(runtime: Runtime, app: Flask, tmp_path: Path) -> None:
    runtime.setup("canary", 0)
    session, other = (runtime.session(candidate=True)["session_id"] for _ in range(2))
    hot = svc(app).hot
    for _ in range(2):
        _decide(app, session)
    runtime.act("kill")  # the rollout moves under the prediction
    with wire(hot, tmp_path) as moved:
        assert (_decide(app, session).verdict.reason, _decide(app, session).verdict.reason) == ("kill_switch",) * 2
    assert round_trips(moved) == 1 + 3 + 1  # refused, the long way, then the new facts predicted: at once
    assert counts(app, "SELECT tool_calls FROM sessions WHERE id = :id", id=session)[0] == 2
    assert counts(app, "SELECT count(*) FROM decisions WHERE session_id = :id AND reason = 'kill_switch'",
                  id=session)[0] == 2
    runtime.ok(runtime.client.post(f"/v1/sessions/{session}/end", json={}, headers=runtime.agent))
    with pytest.raises(Conflict, match="has ended"):
        _decide(app, session)
    assert counts(app, "SELECT count(*) FROM decisions WHERE session_id = :id", id=session)[0] == 4


@ON_POSTGRES
def test_a_cap_that_refuses_falls_back_to_the_cap_reason(runtime: Runtime, app: Flask, tmp_path: Path) -> None:
    runtime.setup("canary", 0)
    calls, spend = runtime.session(candidate=True)["session_id"], runtime.session(candidate=True)["session_id"]
    assert [_decide(app, calls).verdict.verdict for _ in range(20)] == ["allow"] * 20  # canary: 20 calls, $0.50
    with wire(svc(app).hot, tmp_path) as trace:
        refused = _decide(app, calls)
    assert (refused.verdict.verdict, refused.verdict.reason, refused.remaining_calls) == ("deny", "cap_tool_calls", 0)
    assert round_trips(trace) > 1  # the statement reserved nothing and recorded nothing; the long way did
    assert [_decide(app, spend, cost=0.2).verdict.reason for _ in range(3)] == ["", "", "cap_spend"]
    assert counts(app, "SELECT tool_calls, spend_micros FROM sessions WHERE id = :id", id=calls) == (20, 200_000)
    assert counts(app, "SELECT tool_calls, spend_micros FROM sessions WHERE id = :id", id=spend) == (2, 400_000)
    assert counts(app, "SELECT count(*) FROM decisions WHERE session_id IN (:a, :b)", a=calls, b=spend)[0] == 24


@ON_POSTGRES
def test_16_threads_retrying_one_request_at_once_reserve_once(runtime: Runtime, app: Flask) -> None:
    """Every thread predicts (the facts are cached); one statement records, the others get its answer."""
    runtime.setup("canary", 0)
    session = runtime.session(candidate=True)["session_id"]
    _decide(app, session)
    answers: list[decisions.Decided] = []
    failures: list[BaseException] = []
    start = threading.Barrier(16)

    def retry() -> None:
        try:
            start.wait(timeout=30)
            answers.append(_decide(app, session, request_id="same"))
        except BaseException as exc:  # noqa: BLE001 - reported below
            failures.append(exc)

    threads = [threading.Thread(target=retry) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not failures, failures
    assert len({a.decision_id for a in answers}) == 1 and len(answers) == 16
    assert sum(not a.replayed for a in answers) == 1 and {a.remaining_calls for a in answers} == {18}
    assert counts(app, "SELECT tool_calls, spend_micros FROM sessions WHERE id = :id", id=session) == (2, 20_000)
    assert counts(app, "SELECT count(*) FROM decisions WHERE session_id = :id", id=session)[0] == 2


@pytest.mark.slow
@ON_POSTGRES
def test_caps_are_exact_under_16_worker_processes_deciding_at_once(
        runtime: Runtime, app: Flask, db_url: str, policy_dir: Path, served: Callable[..., Server]) -> None:
    plan = open_sessions(runtime)
    replicas = [served(database_url=db_url, policy_dir=policy_dir, workers=8, name=f"replica{n}", upgrade=False)
                for n in range(2)]
    verdicts = hammer([r.url for r in replicas], runtime.agent["Authorization"].removeprefix("Bearer "), plan)
    assert_exact(app, plan, verdicts)


def _session(runtime: Runtime, who: str) -> str:
    if who == "twin session":
        return str(runtime.session(environment="twin")["session_id"])
    if who == "mirror":
        return str(runtime.session(candidate=True, percent=50.0)["mirror"]["session_id"])
    if who == "stable":
        return str(runtime.session(candidate=False, percent=1.0)["session_id"])
    return str(runtime.session(candidate=True, percent={"canary": 1.0, "expansion": 10.0}[who])["session_id"])


@ON_POSTGRES
@pytest.mark.parametrize(("stage", "who"), [("twin", "twin session"), ("shadow", "mirror"), ("canary", "canary"),
                                            ("expansion", "expansion"), ("canary", "stable")])
def test_at_once_answers_and_records_what_the_long_way_does(runtime: Runtime, app: Flask, tmp_path: Path,
                                                             stage: str, who: str) -> None:
    runtime.setup(stage, 0)
    session = _session(runtime, who)
    for tool in ("search_kb", "update_ticket", "wire_money"):
        long_way = _decide(app, session, tool, preview="p")
        if long_way.verdict.verdict == "approval_required":
            continue  # opens an approval: always the long way
        with wire(svc(app).hot, tmp_path) as trace:
            at_once = _decide(app, session, tool, preview="p")
        # A mirror's call an approval would gate: what canary would say reads the caps, the long way.
        assert round_trips(trace) == (3 if (who, tool) == ("mirror", "wire_money") else 1)
        assert (at_once.verdict, at_once.labels, at_once.message) == (long_way.verdict, long_way.labels,
                                                                      long_way.message)
        assert at_once.remaining_calls == long_way.remaining_calls - (1 if long_way.verdict.reserve else 0)
        assert (at_once.chaos is None) == (long_way.chaos is None)
        rows = [counts(app, "SELECT session_id, agent_id, rollout_id, version, arm, stage, tool, tool_class,"
                            " cost_micros, verdict, reason, would_verdict, would_reason, approval_id, preview"
                            " FROM decisions WHERE id = :id", id=d.decision_id) for d in (long_way, at_once)]
        assert tuple(rows[0]) == tuple(rows[1])


@ON_POSTGRES
def test_a_shadow_call_an_approval_would_gate_reads_the_caps_the_long_way(runtime: Runtime, app: Flask,
                                                                          tmp_path: Path) -> None:
    """Shadow records what canary would say; for an approval class at the cap that is the cap, not approval."""
    runtime.setup("shadow", 0)
    session = _session(runtime, "mirror")
    _decide(app, session, "search_kb", cost=0.50)  # canary's cap is $0.50: the session is now at it
    with wire(svc(app).hot, tmp_path) as trace:
        found = _decide(app, session, "wire_money")
    assert (found.verdict.verdict, found.verdict.would_verdict, found.verdict.would_reason) == (
        "shadow", "deny", "cap_spend")
    assert round_trips(trace) == 3
