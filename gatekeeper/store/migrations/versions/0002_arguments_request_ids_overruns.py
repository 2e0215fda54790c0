"""Call arguments and their digest, request ids and overruns on decisions; stage and arguments on approvals.

The columns commit 506fc9c added to the models (SPEC §2, §5); every one is nullable, so existing rows
keep their values and read as "not recorded".

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add the new columns (SQLite and Postgres both add a nullable column in place)."""
    op.add_column("decisions", sa.Column("arguments", sa.Text(), nullable=True))
    op.add_column("decisions", sa.Column("arguments_digest", sa.String(length=64), nullable=True))
    op.add_column("decisions", sa.Column("request_id", sa.String(length=100), nullable=True))
    op.add_column("decisions", sa.Column("overrun_micros", sa.Integer(), nullable=True))
    op.add_column("approvals", sa.Column("stage", sa.String(length=20), nullable=True))
    op.add_column("approvals", sa.Column("arguments", sa.Text(), nullable=True))
    op.add_column("approvals", sa.Column("arguments_digest", sa.String(length=64), nullable=True))


def downgrade() -> None:
    """Drop the new columns."""
    for name in ("stage", "arguments", "arguments_digest"):
        op.drop_column("approvals", name)
    for name in ("arguments", "arguments_digest", "request_id", "overrun_micros"):
        op.drop_column("decisions", name)
