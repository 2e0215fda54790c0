"""Gatekeeper with parts of the decision taken away: how fast each layer could be at best.

`decisions.py --breakdown` and `inprocess.py` measure these beside the real thing, so that a
target can be checked against what the layers under Gatekeeper allow on the same machine:

- `route_only()`: Gatekeeper's app whose POST /v1/decisions does all of its request work (token,
  body validation, metrics, response) but answers a constant allow instead of deciding.
- `bare_sql()`: the same, deciding with `bare_decide`: the leanest transaction that still
  reserves and records a call (BEGIN IMMEDIATE, the conditional `UPDATE … RETURNING`, the
  INSERT of the decision row, COMMIT) on the hot path's own connection, without the session
  read or any verdict logic. Every real decision does this much, and more.

`raw_decider()` runs `bare_decide`'s statements on a plain sqlite3 connection with positional
parameters: SQLite and its driver alone, without Gatekeeper's data layer (in-process only).
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

from flask import Flask

from gatekeeper import create_app, decisions, sessions
from gatekeeper.core.verdicts import ALLOW
from gatekeeper.services import Services
from gatekeeper.store import decision_statements

_ALLOWED = decisions.Decided("0660d58660c099adfcbf93dc", ALLOW, 59, 1_990_000, None,
                             sessions.Labels("support-bot", "v1", "stable", "none"))


def route_only() -> Flask:
    """Return Gatekeeper's app answering every decision with a constant allow, without the database."""
    decisions.decide = lambda *_args, **_kwargs: _ALLOWED  # type: ignore[assignment]
    return create_app()


def bare_sql() -> Flask:
    """Return Gatekeeper's app deciding with `bare_decide`."""
    decisions.decide = bare_decide  # type: ignore[assignment]
    return create_app()


def bare_decide(svc: Services, ask: decisions.Ask, *, scope: Any, now: float, mark: int | None = None
                ) -> decisions.Decided:
    """Reserve the call and record it as allowed in one transaction; no session read, no verdict (nor mark)."""
    with svc.hot.transaction() as tx:
        if decision_statements.reserve(tx, ask.session_id, cost_micros=ask.cost_micros) is None:
            raise RuntimeError("the bench's sessions ran out of budget")
        decision_statements.insert_decision(tx, _row(ask, now))
    return _ALLOWED


def raw_decider(database: Path) -> Callable[..., None]:
    """Return a function like `bare_decide` on its own sqlite3 connection to `database`."""
    connection = sqlite3.connect(database, isolation_level=None)
    for pragma in ("synchronous=NORMAL", "foreign_keys=ON", "wal_autocheckpoint=0"):  # as the hot path's
        connection.execute(f"PRAGMA {pragma}")
    cursor = connection.cursor()
    reserve, reserve_names = _positional(decision_statements._RESERVE)
    insert, insert_names = _positional(decision_statements._INSERT_DECISION)

    def decide(_svc: Any, ask: decisions.Ask, *, scope: Any, now: float) -> None:
        cursor.execute("BEGIN IMMEDIATE")
        values = {"id": ask.session_id, "cost": ask.cost_micros}
        if cursor.execute(reserve, [values[name] for name in reserve_names]).fetchone() is None:
            raise RuntimeError("the bench's sessions ran out of budget")
        row = _row(ask, now)
        cursor.execute(insert, [row[name] for name in insert_names])
        cursor.execute("COMMIT")

    return decide


def _row(ask: decisions.Ask, now: float) -> dict[str, Any]:
    """Return the decision row of an allowed stable call of the bench's agent (the database's first)."""
    return {"id": sessions.new_id(), "session_id": ask.session_id, "agent_id": 1, "rollout_id": None,
            "version": "v1", "arm": "stable", "stage": "none", "tool": ask.tool, "tool_class": "read_only",
            "cost_micros": ask.cost_micros, "verdict": "allow", "reason": "", "would_verdict": None,
            "would_reason": None, "approval_id": None, "preview": ask.preview, "at": now}


def _positional(sql: str) -> tuple[str, list[str]]:
    """Turn `:name` parameters into `?N` ones; return the SQL and the names in number order."""
    names = list(dict.fromkeys(re.findall(r"(?<!:):(\w+)", sql)))
    return re.sub(r"(?<!:):(\w+)", lambda found: f"?{names.index(found.group(1)) + 1}", sql), names
