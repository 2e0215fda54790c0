"""Remaining budget on decisions and unique request ids

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None

# A request id is unique within its session; decisions without one are not in the index.
WITH_REQUEST_ID = sa.text('request_id IS NOT NULL')

def upgrade() -> None:
    """Upgrade the schema."""
    with op.batch_alter_table('decisions', schema=None) as batch_op:
        batch_op.add_column(sa.Column('remaining_tool_calls', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('remaining_spend_micros', sa.Integer(), nullable=True))
        batch_op.create_index('ux_decisions_session_request', ['session_id', 'request_id'], unique=True,
                              sqlite_where=WITH_REQUEST_ID, postgresql_where=WITH_REQUEST_ID)

def downgrade() -> None:
    """Downgrade the schema."""
    with op.batch_alter_table('decisions', schema=None) as batch_op:
        batch_op.drop_index('ux_decisions_session_request', sqlite_where=WITH_REQUEST_ID,
                            postgresql_where=WITH_REQUEST_ID)
        batch_op.drop_column('remaining_spend_micros')
        batch_op.drop_column('remaining_tool_calls')

