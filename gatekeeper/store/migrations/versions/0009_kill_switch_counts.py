"""Kill switch counts: per-rollout time buckets of live candidate outcomes, kept as outcomes arrive

An outcome report no longer counts the rollout's outcomes over the window from `decisions`: it
adds one to its bucket (a ring of 64 slots per rollout) and sums the buckets inside the window.
Outcomes reported before the upgrade are not in the buckets: a rollout's kill switch counts from
the upgrade on (one window, 60 s by default).

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create the bucket table."""
    op.create_table("kill_switch_counts",
                    sa.Column("rollout_id", sa.Integer(), autoincrement=False, nullable=False),
                    sa.Column("slot", sa.Integer(), autoincrement=False, nullable=False),
                    sa.Column("bucket_start", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
                    sa.Column("calls", sa.Integer(), nullable=False),
                    sa.Column("errors", sa.Integer(), nullable=False),
                    sa.PrimaryKeyConstraint("rollout_id", "slot"))


def downgrade() -> None:
    """Drop the bucket table (the kill switch of older code counts from `decisions`)."""
    op.drop_table("kill_switch_counts")
