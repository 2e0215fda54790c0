"""A twin session's chaos seed: sessions.seed.

The rehearsed failures of `stages.twin.chaos` are drawn from (seed, tool, call index), so a run
repeated with the same seed meets the same failures. Sessions started before this have none; the
decision path then uses the session id.

Revision ID: 0011
Revises: 0009
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add the nullable seed column."""
    with op.batch_alter_table("sessions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("seed", sa.String(length=100), nullable=True))


def downgrade() -> None:
    """Drop the seed column."""
    with op.batch_alter_table("sessions", schema=None) as batch_op:
        batch_op.drop_column("seed")
