"""Twin runs indexed by time within their agent: sessions.ix_sessions_agent_twin_started.

The session listing's twin filter (`GET /v1/agents/{agent}/sessions?environment=twin`) walks this
partial index instead of every live session since the last twin run. Live sessions are not in it,
so starting one writes no more than before.

Revision ID: 0012
Revises: 0011
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

TWIN = sa.text("environment = 'twin'")


def upgrade() -> None:
    """Add the partial index of twin sessions."""
    op.create_index("ix_sessions_agent_twin_started", "sessions", ["agent_id", "started_at"], unique=False,
                    sqlite_where=TWIN, postgresql_where=TWIN)


def downgrade() -> None:
    """Drop it."""
    op.drop_index("ix_sessions_agent_twin_started", table_name="sessions")
