"""A decision without reading the session first: judged on predicted facts, checked where it is recorded.

The process predicts the session's facts (its last read of them, HotPath.predicted) and judges the call
in Python before asking. On Postgres one autocommit statement (`decide_at_once`) reads the facts again
in its CTEs, reserves and records only when they equal the prediction, and returns the facts either
way: one round trip. On SQLite (`reserve_as_predicted`) the reservation's own `UPDATE` checks the
prediction, and the decision row follows in the same write transaction: the statement that would
have read the facts is saved. A wrong prediction, a cap that refuses or a session that ended records
nothing: the caller goes the transaction's way (decision_statements.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

from gatekeeper.store.decision_statements import (
    DECISION_COLUMNS,
    FACTS_QUERY,
    FIRST_ANSWER,
    RESERVE_WHERE,
    FirstAnswer,
    SessionFacts,
    insert_decision,
)
from gatekeeper.store.hot_path import HotPath

# The facts a verdict depends on, compared with the prediction (caps and seed never change on a session).
PREDICTED = ("agent_id", "agent", "policy", "rollout_id", "version", "arm", "environment", "mirror",
             "rollout_stage", "rollout_state")
_FIRST_COLUMNS = len(FirstAnswer._fields)


class AtOnce(NamedTuple):
    """What the statement found and did: the facts as they stand, the reservation, and a request id's first answer."""

    facts: SessionFacts
    reserved: tuple[int, int] | None  # the counters after the reservation, None when nothing was reserved
    recorded: bool  # the decision row was inserted (the prediction held, and the caps when reserving)
    first: FirstAnswer | None  # the decision the request id was already answered with: nothing was done


_SQL: dict[tuple[bool, bool, bool, bool], str] = {}


def _sql(*, reserve: bool, wide: bool, retry: bool, marked: bool) -> str:
    key = (reserve, wide, retry, marked)
    found = _SQL.get(key)
    if found is not None:
        return found
    match = " AND ".join(f"{name} IS NOT DISTINCT FROM :p_{name}" for name in PREDICTED)
    columns, values = DECISION_COLUMNS, ", ".join(f":d_{name.strip()}" for name in DECISION_COLUMNS.split(","))
    if wide:  # reserving verdicts only: the budget the answer gives comes from the reservation
        columns += ", arguments, arguments_digest, request_id, remaining_tool_calls, remaining_spend_micros"
        values += (", :d_arguments, :d_arguments_digest, :d_request_id,"
                   " facts.cap_tool_calls - res.tool_calls, facts.cap_spend_micros - res.spend_micros")
    parts = [f"facts ({', '.join(SessionFacts._fields)}) AS ({FACTS_QUERY})"]
    if retry:
        parts.append(f"first AS ({FIRST_ANSWER.replace(':session_id', ':id')})")
    parts.append(f"ok AS (SELECT 1 FROM facts WHERE status = 'open' AND {match}"
                 + (" AND COALESCE(mark, 0) = :mark" if marked else "")
                 + (" AND NOT EXISTS (SELECT 1 FROM first)" if retry else "") + ")")
    if reserve:
        parts.append(f"res AS ({RESERVE_WHERE} AND EXISTS (SELECT 1 FROM ok) RETURNING tool_calls, spend_micros)")
        parts.append(f"ins AS (INSERT INTO decisions ({columns}) SELECT {values} FROM res, facts RETURNING 1)")
        tail = "res.tool_calls, res.spend_micros, (SELECT count(*) FROM ins)"
        source = "facts LEFT JOIN res ON true"
    else:
        parts.append(f"ins AS (INSERT INTO decisions ({columns}) SELECT {values} FROM ok RETURNING 1)")
        tail, source = "NULL, NULL, (SELECT count(*) FROM ins)", "facts"
    if retry:
        tail += ", first.*"
        source += " LEFT JOIN first ON true"
    found = _SQL[key] = f"WITH {', '.join(parts)} SELECT facts.*, {tail} FROM {source}"
    return found


def decide_at_once(session_id: str, *, hot: HotPath, predicted: SessionFacts, row: Mapping[str, Any],
                   reserve: bool, mark: int | None) -> AtOnce | None:
    """Record the decision `row` (reserving first when `reserve`) if the facts are as predicted; None: no session.

    `row` has the keys of DECISION_COLUMNS, and arguments, arguments_digest and request_id (all three or
    none: then `reserve` must be True); a request id already answered does nothing and returns its answer.
    """
    wide = "request_id" in row
    retry = row.get("request_id") is not None
    assert reserve or not wide, "the remaining budget of a wide row comes from the reservation"
    params: dict[str, Any] = {f"d_{name}": value for name, value in row.items()}
    params.update({f"p_{name}": getattr(predicted, name) for name in PREDICTED})
    params.update(id=session_id, cost=row["cost_micros"], mark=mark, request_id=row.get("request_id"))
    sql = _sql(reserve=reserve, wide=wide, retry=retry, marked=mark is not None)
    found = hot.statement(sql, params)
    if found is None:
        return None
    facts = SessionFacts(*found[:len(SessionFacts._fields)])
    calls, micros, inserted = found[len(SessionFacts._fields):len(SessionFacts._fields) + 3]
    first = found[-_FIRST_COLUMNS:] if retry else None
    return AtOnce(facts, None if calls is None else (int(calls), int(micros)), bool(inserted),
                  FirstAnswer(*first) if first is not None and first[0] is not None else None)


# SQLite: the reservation of decision_statements.py, taken only while the facts are as predicted. A
# session's own columns and its agent's name and policy never change once written, so what the check
# reads is what can move: the rollout's stage and state (and the revocation mark, when given).
_RESERVE_AS_PREDICTED = {
    marked: (f"{RESERVE_WHERE} AND NOT EXISTS (SELECT 1 FROM rollouts r WHERE r.id = sessions.rollout_id"
             " AND (r.stage IS NOT :p_rollout_stage OR r.state IS NOT :p_rollout_state))"
             + (" AND (SELECT COALESCE(max(id), 0) FROM token_revocations) = :mark" if marked else "")
             + " RETURNING tool_calls, spend_micros")
    for marked in (False, True)}


def reserve_as_predicted(session_id: str, *, hot: HotPath, predicted: SessionFacts, row: Mapping[str, Any],
                         mark: int | None) -> AtOnce | None:
    """SQLite: reserve and record the decision `row` in one write transaction if the facts are as predicted.

    None: nothing was done (the facts moved, the session ended, the caps refuse, or the mark changed).
    `row` is a reserving verdict's (keys as `decision_statements.insert_decision` takes them, without
    a request id); a wide row gets the remaining budget from the reservation.
    """
    params = {"id": session_id, "cost": row["cost_micros"], "mark": mark,
              "p_rollout_stage": predicted.rollout_stage, "p_rollout_state": predicted.rollout_state}
    with hot.transaction() as tx:
        found = tx.one(_RESERVE_AS_PREDICTED[mark is not None], params)
        if found is None:
            return None  # the empty transaction commits: nothing was written
        calls, micros = int(found[0]), int(found[1])
        if "request_id" in row:
            row = {**row, "remaining_tool_calls": max(predicted.cap_tool_calls - calls, 0),
                   "remaining_spend_micros": max(predicted.cap_spend_micros - micros, 0)}
        insert_decision(tx, row)
    return AtOnce(predicted, (calls, micros), True, None)  # a prediction's counters are never read
