"""Schema 2: every table and index as the hand-made upgrade (schema_version 2, commit ed52833) made them.

A database that still has the old `schema_version` table at version 2 is stamped at this revision
instead of running it (see gatekeeper/store/schema.py), so this must stay exactly that schema.

Revision ID: 0001
Revises:
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# In foreign-key order.
TABLES = ("agents", "alert_receipts", "leases", "notifications", "policy_revisions", "tokens", "users", "rollouts",
          "sessions", "versions", "approvals", "decisions", "gate_evaluations", "transitions")


def upgrade() -> None:
    """Create every table and index of schema 2."""
    op.create_table("agents",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=63), nullable=False),
        sa.Column("policy", sa.String(length=200), nullable=False),
        sa.Column("stable_version", sa.String(length=100), nullable=True),
        sa.Column("rollout_id", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id")
    )
    op.create_index("ix_agents_name", "agents", ["name"], unique=True)
    op.create_table("alert_receipts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("fingerprint", sa.String(length=100), nullable=False),
        sa.Column("starts_at", sa.String(length=60), nullable=False),
        sa.Column("agent", sa.String(length=63), nullable=True),
        sa.Column("alertname", sa.String(length=200), nullable=True),
        sa.Column("action", sa.String(length=30), nullable=False),
        sa.Column("received_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("fingerprint", "starts_at")
    )
    op.create_table("leases",
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("holder", sa.String(length=200), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("name")
    )
    op.create_table("notifications",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("transition_id", sa.Integer(), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.Float(), nullable=False),
        sa.Column("delivered_at", sa.Float(), nullable=True),
        sa.Column("last_error", sa.String(length=1000), nullable=True),
        sa.PrimaryKeyConstraint("id")
    )
    op.create_index("ix_notifications_delivered_at", "notifications", ["delivered_at"], unique=False)
    op.create_index("ix_notifications_transition_id", "notifications", ["transition_id"], unique=False)
    op.create_table("policy_revisions",
        sa.Column("revision", sa.String(length=40), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("path", sa.String(length=1000), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("first_seen_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("revision")
    )
    op.create_index("ix_policy_revisions_name", "policy_revisions", ["name"], unique=False)
    op.create_table("tokens",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("role", sa.String(length=20), nullable=False),
        sa.Column("agent", sa.String(length=63), nullable=True),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("revoked_at", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("id")
    )
    op.create_index("ix_tokens_token_hash", "tokens", ["token_hash"], unique=True)
    op.create_table("users",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("username", sa.String(length=100), nullable=False),
        sa.Column("password_hash", sa.String(length=300), nullable=False),
        sa.Column("role", sa.String(length=20), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id")
    )
    op.create_index("ix_users_username", "users", ["username"], unique=True)
    op.create_table("rollouts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("agent_id", sa.Integer(), nullable=False),
        sa.Column("candidate_version", sa.String(length=100), nullable=False),
        sa.Column("stable_version", sa.String(length=100), nullable=True),
        sa.Column("stage", sa.String(length=20), nullable=False),
        sa.Column("tier", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("state_reason", sa.String(length=500), nullable=False),
        sa.Column("tier_started_at", sa.Float(), nullable=False),
        sa.Column("started_at", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.Column("ended_at", sa.Float(), nullable=True),
        sa.Column("policy_revision", sa.String(length=40), nullable=False),
        sa.Column("kill_switch_open", sa.Boolean(), nullable=False),
        sa.Column("consecutive_failures", sa.Integer(), nullable=False),
        sa.Column("consecutive_errors", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["agent_id"], ["agents.id"]),
        sa.PrimaryKeyConstraint("id")
    )
    op.create_index("ix_rollouts_agent_id", "rollouts", ["agent_id"], unique=False)
    op.create_table("sessions",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("agent_id", sa.Integer(), nullable=False),
        sa.Column("rollout_id", sa.Integer(), nullable=True),
        sa.Column("version", sa.String(length=100), nullable=False),
        sa.Column("arm", sa.String(length=20), nullable=False),
        sa.Column("stage", sa.String(length=20), nullable=True),
        sa.Column("environment", sa.String(length=10), nullable=False),
        sa.Column("session_key", sa.String(length=200), nullable=False),
        sa.Column("scenario", sa.String(length=200), nullable=True),
        sa.Column("mirror_of", sa.String(length=40), nullable=True),
        sa.Column("cap_tool_calls", sa.Integer(), nullable=False),
        sa.Column("cap_spend_micros", sa.Integer(), nullable=False),
        sa.Column("tool_calls", sa.Integer(), nullable=False),
        sa.Column("spend_micros", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("passed", sa.Boolean(), nullable=True),
        sa.Column("twin_snapshot_at", sa.Float(), nullable=True),
        sa.Column("started_at", sa.Float(), nullable=False),
        sa.Column("ended_at", sa.Float(), nullable=True),
        sa.ForeignKeyConstraint(["agent_id"], ["agents.id"]),
        sa.PrimaryKeyConstraint("id")
    )
    op.create_index("ix_sessions_agent_id", "sessions", ["agent_id"], unique=False)
    op.create_index("ix_sessions_mirror_of", "sessions", ["mirror_of"], unique=False)
    op.create_index("ix_sessions_rollout_id", "sessions", ["rollout_id"], unique=False)
    op.create_table("versions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("agent_id", sa.Integer(), nullable=False),
        sa.Column("label", sa.String(length=100), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(["agent_id"], ["agents.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("agent_id", "label")
    )
    op.create_index("ix_versions_agent_id", "versions", ["agent_id"], unique=False)
    op.create_table("approvals",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("agent_id", sa.Integer(), nullable=False),
        sa.Column("session_id", sa.String(), nullable=False),
        sa.Column("rollout_id", sa.Integer(), nullable=True),
        sa.Column("version", sa.String(length=100), nullable=False),
        sa.Column("tool", sa.String(length=200), nullable=False),
        sa.Column("tool_class", sa.String(length=20), nullable=False),
        sa.Column("cost_micros", sa.Integer(), nullable=False),
        sa.Column("preview", sa.String(length=2000), nullable=True),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=False),
        sa.Column("decided_by", sa.String(length=200), nullable=True),
        sa.Column("decided_at", sa.Float(), nullable=True),
        sa.Column("decision_reason", sa.String(length=1000), nullable=True),
        sa.Column("consumed_at", sa.Float(), nullable=True),
        sa.ForeignKeyConstraint(["agent_id"], ["agents.id"]),
        sa.ForeignKeyConstraint(["session_id"], ["sessions.id"]),
        sa.PrimaryKeyConstraint("id")
    )
    op.create_index("ix_approvals_agent_id", "approvals", ["agent_id"], unique=False)
    op.create_index("ix_approvals_state", "approvals", ["state"], unique=False)
    op.create_table("decisions",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("session_id", sa.String(), nullable=False),
        sa.Column("agent_id", sa.Integer(), nullable=False),
        sa.Column("rollout_id", sa.Integer(), nullable=True),
        sa.Column("version", sa.String(length=100), nullable=False),
        sa.Column("arm", sa.String(length=20), nullable=False),
        sa.Column("stage", sa.String(length=20), nullable=True),
        sa.Column("tool", sa.String(length=200), nullable=False),
        sa.Column("tool_class", sa.String(length=20), nullable=False),
        sa.Column("cost_micros", sa.Integer(), nullable=False),
        sa.Column("verdict", sa.String(length=30), nullable=False),
        sa.Column("reason", sa.String(length=60), nullable=False),
        sa.Column("would_verdict", sa.String(length=30), nullable=True),
        sa.Column("would_reason", sa.String(length=60), nullable=True),
        sa.Column("approval_id", sa.String(length=40), nullable=True),
        sa.Column("preview", sa.String(length=2000), nullable=True),
        sa.Column("at", sa.Float(), nullable=False),
        sa.Column("outcome_status", sa.String(length=10), nullable=True),
        sa.Column("actual_cost_micros", sa.Integer(), nullable=True),
        sa.Column("latency_ms", sa.Float(), nullable=True),
        sa.Column("outcome_at", sa.Float(), nullable=True),
        sa.ForeignKeyConstraint(["agent_id"], ["agents.id"]),
        sa.ForeignKeyConstraint(["session_id"], ["sessions.id"]),
        sa.PrimaryKeyConstraint("id")
    )
    # Only reported decisions are indexed: a decision"s insert writes one page fewer.
    reported = sa.text("outcome_at IS NOT NULL")
    op.create_index("ix_decisions_rollout_arm_outcome", "decisions", ["rollout_id", "arm", "outcome_at"], unique=False,
                    sqlite_where=reported, postgresql_where=reported)
    op.create_index("ix_decisions_session_id", "decisions", ["session_id"], unique=False)
    op.create_table("gate_evaluations",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("rollout_id", sa.Integer(), nullable=False),
        sa.Column("agent_id", sa.Integer(), nullable=False),
        sa.Column("at", sa.Float(), nullable=False),
        sa.Column("stage", sa.String(length=20), nullable=False),
        sa.Column("tier", sa.Integer(), nullable=False),
        sa.Column("window_key", sa.String(length=100), nullable=False),
        sa.Column("result", sa.String(length=20), nullable=False),
        sa.Column("report", sa.Text(), nullable=False),
        sa.Column("policy_revision", sa.String(length=40), nullable=False),
        sa.ForeignKeyConstraint(["agent_id"], ["agents.id"]),
        sa.ForeignKeyConstraint(["rollout_id"], ["rollouts.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("rollout_id", "window_key")
    )
    op.create_index("ix_gate_evaluations_agent_id", "gate_evaluations", ["agent_id"], unique=False)
    op.create_index("ix_gate_evaluations_rollout_id", "gate_evaluations", ["rollout_id"], unique=False)
    op.create_table("transitions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("rollout_id", sa.Integer(), nullable=False),
        sa.Column("agent_id", sa.Integer(), nullable=False),
        sa.Column("at", sa.Float(), nullable=False),
        sa.Column("actor", sa.String(length=200), nullable=False),
        sa.Column("action", sa.String(length=30), nullable=False),
        sa.Column("reason", sa.String(length=1000), nullable=False),
        sa.Column("from_stage", sa.String(length=20), nullable=True),
        sa.Column("from_tier", sa.Integer(), nullable=True),
        sa.Column("from_state", sa.String(length=20), nullable=True),
        sa.Column("to_stage", sa.String(length=20), nullable=False),
        sa.Column("to_tier", sa.Integer(), nullable=False),
        sa.Column("to_state", sa.String(length=20), nullable=False),
        sa.Column("traffic_percent", sa.Float(), nullable=False),
        sa.Column("policy_revision", sa.String(length=40), nullable=False),
        sa.Column("metrics", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(["agent_id"], ["agents.id"]),
        sa.ForeignKeyConstraint(["rollout_id"], ["rollouts.id"]),
        sa.PrimaryKeyConstraint("id")
    )
    op.create_index("ix_transitions_agent_id", "transitions", ["agent_id"], unique=False)
    op.create_index("ix_transitions_rollout_id", "transitions", ["rollout_id"], unique=False)


def downgrade() -> None:
    """Drop every table (and with them their indexes)."""
    for table in reversed(TABLES):
        op.drop_table(table)
