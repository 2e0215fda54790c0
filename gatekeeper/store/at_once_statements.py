"""A decision in one statement round trip on Postgres: read, reservation and insert in one autocommit statement.

The process predicts the session's facts (its last read of them, HotPath.predicted) and judges the call
in Python before asking; the statement's CTEs read the facts again, reserve and record only when they
equal the prediction, and return the facts either way. A wrong prediction, a cap that refuses or a
session that ended records nothing: the caller goes the transaction's way (decision_statements.py).
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
