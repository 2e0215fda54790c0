"""Token revocations and stable changes

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Upgrade the schema."""
    op.create_table('stable_changes',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('agent_id', sa.Integer(), nullable=False),
    sa.Column('at', sa.Float(), nullable=False),
    sa.Column('actor', sa.String(length=200), nullable=False),
    sa.Column('reason', sa.String(length=1000), nullable=False),
    sa.Column('from_version', sa.String(length=100), nullable=True),
    sa.Column('to_version', sa.String(length=100), nullable=False),
    sa.ForeignKeyConstraint(['agent_id'], ['agents.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('stable_changes', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_stable_changes_agent_id'), ['agent_id'], unique=False)

    op.create_table('token_revocations',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('token_id', sa.Integer(), nullable=False),
    sa.Column('at', sa.Float(), nullable=False),
    sa.Column('actor', sa.String(length=200), nullable=False),
    sa.ForeignKeyConstraint(['token_id'], ['tokens.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('token_id')
    )


def downgrade() -> None:
    """Downgrade the schema."""
    op.drop_table('token_revocations')
    with op.batch_alter_table('stable_changes', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_stable_changes_agent_id'))

    op.drop_table('stable_changes')
