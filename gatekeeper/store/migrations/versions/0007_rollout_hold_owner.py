"""Who holds a rollout is a column: rollouts.held_by (gate | outage | alert) and held_by_alert.

Until now the owner of a hold was read back out of `state_reason`: an alert's hold starts with
"alert " and carries the alert's fingerprint in brackets, an outage's says "metrics unavailable".
Held rows get their owner from that text once, here; every other row has none.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import re

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

_FINGERPRINT = re.compile(r"\[([^\]]+)\]")


def upgrade() -> None:
    """Add the two columns and derive them for rollouts held today."""
    with op.batch_alter_table("rollouts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("held_by", sa.String(length=10), nullable=True))
        batch_op.add_column(sa.Column("held_by_alert", sa.String(length=100), nullable=True))
    rollouts = sa.table("rollouts", sa.column("id", sa.Integer), sa.column("state", sa.String),
                        sa.column("state_reason", sa.String), sa.column("held_by", sa.String),
                        sa.column("held_by_alert", sa.String))
    bind = op.get_bind()
    held = bind.execute(sa.select(rollouts.c.id, rollouts.c.state_reason).where(rollouts.c.state == "held")).all()
    for rollout_id, reason in held:
        owner, alert = _owner(reason or "")
        bind.execute(rollouts.update().where(rollouts.c.id == rollout_id).values(held_by=owner, held_by_alert=alert))


def _owner(reason: str) -> tuple[str, str | None]:
    if reason.startswith("alert "):
        found = _FINGERPRINT.search(reason)
        return "alert", found.group(1) if found else None
    return ("outage" if "metrics unavailable" in reason else "gate"), None


def downgrade() -> None:
    """Drop the two columns (the reasons still say who held what)."""
    with op.batch_alter_table("rollouts", schema=None) as batch_op:
        batch_op.drop_column("held_by_alert")
        batch_op.drop_column("held_by")
