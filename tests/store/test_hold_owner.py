"""Who holds a rollout is a column (`held_by`, `held_by_alert`), kept in step by every hold and release."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import text

from gatekeeper.store import schema
from gatekeeper.store.db import Database

HELD = [  # (state, state_reason) as the code before the column wrote them -> (held_by, held_by_alert)
    ("held", "alert CandidateErrors firing (critical) [4f2a9c]: errors up", "alert", "4f2a9c"),
    ("held", "tier gate: metrics unavailable (prometheus): connection refused", "outage", None),
    ("held", "shadow gate: too few sessions: 2 < 10", "gate", None),
    ("progressing", "alert CandidateErrors resolved [4f2a9c]", None, None),
    ("paused", "rolled back by the gate", None, None),
]


@pytest.mark.parametrize("url_kind", ["sqlite", "postgres"])
def test_the_migration_derives_the_hold_owner_from_the_reason(url_kind: str, tmp_path: Path,
                                                              request: pytest.FixtureRequest) -> None:
    url = (f"sqlite:///{tmp_path / 'held.db'}" if url_kind == "sqlite"
           else request.getfixturevalue("postgres").create_database("gk_held"))
    database = Database(url)
    try:
        with database.engine.begin() as connection:
            command.upgrade(schema.alembic_config(connection), "0006")
            connection.execute(text("INSERT INTO agents (name, policy, created_at) VALUES ('bot', 'p', 0)"))
            for state, reason, _, _ in HELD:
                connection.execute(text(
                    "INSERT INTO rollouts (agent_id, candidate_version, stage, tier, state, state_reason,"
                    " tier_started_at, started_at, updated_at, policy_revision, kill_switch_open,"
                    " consecutive_failures, consecutive_errors) VALUES (1, 'v2', 'canary', 0, :state, :reason,"
                    " 0, 0, 0, 'r', false, 0, 0)"), {"state": state, "reason": reason})
        assert database.upgrade() == schema.head()
        with database.engine.connect() as connection:
            found = connection.execute(text("SELECT held_by, held_by_alert FROM rollouts ORDER BY id")).all()
        assert [tuple(row) for row in found] == [(owner, alert) for _, _, owner, alert in HELD]
    finally:
        database.dispose()
