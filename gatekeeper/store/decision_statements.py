"""The decision path's statements: plain SQL with `:name` parameters, run on a `Tx` (store/hot_path.py).

They run unchanged on SQLite and Postgres. Nothing here commits: the hot path's transaction does.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from gatekeeper.errors import NotFound
from gatekeeper.store.hot_path import Tx, param_marks


class SessionFacts(NamedTuple):
    """A session row joined with its agent and rollout, as one decision needs it (a tuple: built per decision)."""

    id: str
    agent_id: int
    agent: str
    policy: str
    rollout_id: int | None
    version: str
    arm: str
    environment: str
    mirror: bool  # 0 or 1 on SQLite
    status: str
    cap_tool_calls: int
    cap_spend_micros: int
    tool_calls: int
    spend_micros: int
    rollout_stage: str | None
    rollout_state: str | None
    seed: str  # the chaos seed of a twin session (core/chaos.py); the session id when none was given
    mark: int | None  # the token revocation mark, read in the same statement (api/auth.py)


# The facts' query, in SessionFacts' order; at_once_statements.py reads it as a CTE too.
FACTS_QUERY = """SELECT :id, s.agent_id, a.name, a.policy, s.rollout_id, s.version, s.arm, s.environment,
 s.mirror_of IS NOT NULL, s.status, s.cap_tool_calls, s.cap_spend_micros, s.tool_calls, s.spend_micros,
 r.stage, r.state, COALESCE(s.seed, s.id), (SELECT max(id) FROM token_revocations)
 FROM sessions s JOIN agents a ON a.id = s.agent_id LEFT JOIN rollouts r ON r.id = s.rollout_id
 WHERE s.id = :id"""
_LOAD = FACTS_QUERY


def load_session(tx: Tx, session_id: str) -> SessionFacts:
    """Return the facts of a session, or raise NotFound."""
    row = tx.one(_LOAD, {"id": session_id})
    if row is None:
        raise NotFound(f"no session {session_id!r}", field="session_id")
    return SessionFacts(*row)


def lock_session(tx: Tx, session_id: str) -> None:
    """Serialise decisions of one session on Postgres (SQLite's BEGIN IMMEDIATE already does)."""
    if tx.postgres:
        tx.one("SELECT id FROM sessions WHERE id = :id FOR UPDATE", {"id": session_id})


# The one atomic reservation; at_once_statements.py adds a condition before RETURNING.
RESERVE_WHERE = """UPDATE sessions SET tool_calls = tool_calls + 1, spend_micros = spend_micros + :cost
 WHERE id = :id AND status = 'open' AND tool_calls < cap_tool_calls AND spend_micros + :cost <= cap_spend_micros"""
_RESERVE = f"{RESERVE_WHERE} RETURNING tool_calls, spend_micros"


def reserve(tx: Tx, session_id: str, *, cost_micros: int) -> tuple[int, int] | None:
    """Take one call and the cost from the session's caps in one statement; None when they refuse."""
    row = tx.one(_RESERVE, {"id": session_id, "cost": cost_micros})
    return None if row is None else (int(row[0]), int(row[1]))


def counters(tx: Tx, session_id: str) -> tuple[int, int]:
    """Return the session's tool calls and spend as they stand."""
    row = tx.one("SELECT tool_calls, spend_micros FROM sessions WHERE id = :id", {"id": session_id})
    return int(row[0]), int(row[1])


def ran_counts(tx: Tx, session_id: str, tools: Iterable[str]) -> dict[str, int]:
    """Return how often each of `tools` ran (or, shadowed, would have) in the session."""
    names = sorted(tools)
    params: dict[str, Any] = {"id": session_id, **{f"t{i}": tool for i, tool in enumerate(names)}}
    marks = ", ".join(f":t{i}" for i in range(len(names)))
    rows = tx.all(f"SELECT tool, count(*) FROM decisions WHERE session_id = :id AND tool IN ({marks})"
                  " AND (verdict = 'allow' OR would_verdict = 'allow') GROUP BY tool", params)
    return {tool: int(count) for tool, count in rows}


@dataclass(frozen=True)
class ApprovalFacts:
    """An approval as a repeated decision needs it."""

    id: str
    session_id: str
    tool: str
    cost_micros: int
    state: str
    expires_at: float
    consumed: bool
    arguments_digest: str | None = None


def load_approval(tx: Tx, approval_id: str) -> ApprovalFacts | None:
    """Return an approval, locked on Postgres until the transaction ends."""
    sql = ("SELECT session_id, tool, cost_micros, state, expires_at, consumed_at, arguments_digest FROM approvals"
           " WHERE id = :id" + (" FOR UPDATE" if tx.postgres else ""))
    row = tx.one(sql, {"id": approval_id})
    if row is None:
        return None
    return ApprovalFacts(approval_id, row[0], row[1], int(row[2]), row[3], float(row[4]), row[5] is not None,
                         row[6])


def expire_approval(tx: Tx, approval_id: str) -> None:
    """Mark a pending approval expired."""
    tx.run("UPDATE approvals SET state = 'expired' WHERE id = :id AND state = 'pending'", {"id": approval_id})


def consume_approval(tx: Tx, approval_id: str, *, now: float) -> bool:
    """Spend an approved approval once; False when it was already spent."""
    return tx.run("UPDATE approvals SET consumed_at = :now WHERE id = :id AND state = 'approved'"
                  " AND consumed_at IS NULL", {"id": approval_id, "now": now}) == 1


_INSERT_APPROVAL = """INSERT INTO approvals (id, agent_id, session_id, rollout_id, version, tool, tool_class,
 cost_micros, preview, stage, arguments, arguments_digest, state, created_at, expires_at) VALUES (:id, :agent_id,
 :session_id, :rollout_id, :version, :tool, :tool_class, :cost_micros, :preview, :stage, :arguments,
 :arguments_digest, 'pending', :created_at, :expires_at)"""


def insert_approval(tx: Tx, values: Mapping[str, Any]) -> None:
    """Open a pending approval (keys: the columns of `_INSERT_APPROVAL`)."""
    tx.send(_INSERT_APPROVAL, values)


DECISION_COLUMNS = ("id, session_id, agent_id, rollout_id, version, arm, stage, tool, tool_class, cost_micros,"
                    " verdict, reason, would_verdict, would_reason, approval_id, preview, at")
_INSERT_DECISION = f"INSERT INTO decisions ({DECISION_COLUMNS}) VALUES ({param_marks(DECISION_COLUMNS)})"
# Arguments and a request id (with the answer's budget, for retries) take a wider row; the common
# call without them keeps the narrow statement, which costs measurably less per decision.
RETRY_COLUMNS = "arguments, arguments_digest, request_id, remaining_tool_calls, remaining_spend_micros"
_INSERT_FULL_DECISION = (f"INSERT INTO decisions ({DECISION_COLUMNS}, {RETRY_COLUMNS})"
                         f" VALUES ({param_marks(DECISION_COLUMNS)}, {param_marks(RETRY_COLUMNS)})")


def insert_decision(tx: Tx, values: Mapping[str, Any]) -> None:
    """Record one verdict (keys: `DECISION_COLUMNS`, and all of `RETRY_COLUMNS` or none)."""
    tx.send(_INSERT_FULL_DECISION if "request_id" in values else _INSERT_DECISION, values)


class FirstAnswer(NamedTuple):
    """The decision a request id was first answered with, as a retry returns it."""

    decision_id: str
    tool: str
    cost_micros: int
    arguments_digest: str | None
    stage: str | None
    verdict: str
    reason: str
    approval_id: str | None
    remaining_tool_calls: int | None
    remaining_spend_micros: int | None


FIRST_ANSWER = """SELECT id, tool, cost_micros, arguments_digest, stage, verdict, reason, approval_id,
 remaining_tool_calls, remaining_spend_micros FROM decisions
 WHERE session_id = :session_id AND request_id = :request_id AND request_id IS NOT NULL"""


def first_answer(tx: Tx, session_id: str, request_id: str) -> FirstAnswer | None:
    """Return the decision a session's request id was answered with, if any (the unique index finds it)."""
    row = tx.one(FIRST_ANSWER, {"session_id": session_id, "request_id": request_id})
    return None if row is None else FirstAnswer(*row)


def is_duplicate(exc: BaseException) -> bool:
    """Return whether a failed statement broke a unique index (sqlite3, psycopg2 and psycopg alike)."""
    return type(exc).__name__ in ("IntegrityError", "UniqueViolation")
