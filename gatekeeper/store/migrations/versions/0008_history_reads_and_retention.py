"""History-independent reads and retention: indexes in the orders read, evaluation counts, rollout days.

Gate evaluations, transitions and sessions are indexed by time within their agent and rollout,
the `mirror_of` index covers mirrors only, approvals are indexed by session (retention keeps
an approval's session). `gate_evaluation_counts` is filled here from the stored evaluations and
kept as evaluations are written; `rollout_days` holds what retention sums before it prunes.

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

MICROS = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
MIRRORS = sa.text("mirror_of IS NOT NULL")


def upgrade() -> None:
    """Add the two tables and the indexes; count the evaluations stored so far."""
    op.create_table("gate_evaluation_counts",
                    sa.Column("agent_id", sa.Integer(), nullable=False),
                    sa.Column("result", sa.String(length=20), nullable=False),
                    sa.Column("count", sa.Integer(), nullable=False),
                    sa.ForeignKeyConstraint(["agent_id"], ["agents.id"]),
                    sa.PrimaryKeyConstraint("agent_id", "result"))
    op.create_table("rollout_days",
                    sa.Column("agent_id", sa.Integer(), nullable=False),
                    sa.Column("rollout_id", sa.Integer(), nullable=False),
                    sa.Column("arm", sa.String(length=20), nullable=False),
                    sa.Column("day", sa.Integer(), nullable=False),
                    sa.Column("sessions", sa.Integer(), nullable=False),
                    sa.Column("decisions", sa.Integer(), nullable=False),
                    sa.Column("errors", sa.Integer(), nullable=False),
                    sa.Column("spend_micros", MICROS, nullable=False),
                    sa.ForeignKeyConstraint(["agent_id"], ["agents.id"]),
                    sa.PrimaryKeyConstraint("agent_id", "rollout_id", "arm", "day"))
    op.execute("INSERT INTO gate_evaluation_counts (agent_id, result, count) "
               "SELECT agent_id, result, count(*) FROM gate_evaluations GROUP BY agent_id, result")
    with op.batch_alter_table("approvals", schema=None) as batch_op:
        batch_op.create_index("ix_approvals_session_id", ["session_id"], unique=False)
    with op.batch_alter_table("gate_evaluations", schema=None) as batch_op:
        batch_op.drop_index("ix_gate_evaluations_agent_id")
        batch_op.drop_index("ix_gate_evaluations_rollout_id")
        batch_op.create_index("ix_gate_evaluations_agent_at", ["agent_id", "at"], unique=False)
        batch_op.create_index("ix_gate_evaluations_rollout_at", ["rollout_id", "at"], unique=False)
    with op.batch_alter_table("sessions", schema=None) as batch_op:
        batch_op.drop_index("ix_sessions_agent_id")
        batch_op.drop_index("ix_sessions_rollout_id")
        batch_op.drop_index("ix_sessions_mirror_of")
        batch_op.create_index("ix_sessions_agent_started", ["agent_id", "started_at"], unique=False)
        batch_op.create_index("ix_sessions_rollout_started", ["rollout_id", "started_at"], unique=False)
        batch_op.create_index("ix_sessions_mirror_of", ["mirror_of"], unique=False,
                              sqlite_where=MIRRORS, postgresql_where=MIRRORS)
    with op.batch_alter_table("transitions", schema=None) as batch_op:
        batch_op.drop_index("ix_transitions_agent_id")
        batch_op.create_index("ix_transitions_agent_at", ["agent_id", "at"], unique=False)


def downgrade() -> None:
    """Put the single-column indexes back and drop the two tables."""
    with op.batch_alter_table("transitions", schema=None) as batch_op:
        batch_op.drop_index("ix_transitions_agent_at")
        batch_op.create_index("ix_transitions_agent_id", ["agent_id"], unique=False)
    with op.batch_alter_table("sessions", schema=None) as batch_op:
        batch_op.drop_index("ix_sessions_mirror_of")
        batch_op.drop_index("ix_sessions_rollout_started")
        batch_op.drop_index("ix_sessions_agent_started")
        batch_op.create_index("ix_sessions_mirror_of", ["mirror_of"], unique=False)
        batch_op.create_index("ix_sessions_rollout_id", ["rollout_id"], unique=False)
        batch_op.create_index("ix_sessions_agent_id", ["agent_id"], unique=False)
    with op.batch_alter_table("gate_evaluations", schema=None) as batch_op:
        batch_op.drop_index("ix_gate_evaluations_rollout_at")
        batch_op.drop_index("ix_gate_evaluations_agent_at")
        batch_op.create_index("ix_gate_evaluations_rollout_id", ["rollout_id"], unique=False)
        batch_op.create_index("ix_gate_evaluations_agent_id", ["agent_id"], unique=False)
    with op.batch_alter_table("approvals", schema=None) as batch_op:
        batch_op.drop_index("ix_approvals_session_id")
    op.drop_table("rollout_days")
    op.drop_table("gate_evaluation_counts")
