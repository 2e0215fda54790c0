"""Money columns as 64-bit integers on Postgres.

Micro-dollars pass 2**31 at $2,147: a call estimated at the API's limit of $10,000, or a session cap
above $2,147, made Postgres answer "integer out of range" (a 500). SQLite's INTEGER is 64-bit
already, so SQLite databases are left as they are (the models map the type to INTEGER there).

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

COLUMNS = (("sessions", "cap_spend_micros", False), ("sessions", "spend_micros", False),
           ("decisions", "cost_micros", False), ("decisions", "remaining_spend_micros", True),
           ("decisions", "actual_cost_micros", True), ("decisions", "overrun_micros", True),
           ("approvals", "cost_micros", False))


def upgrade() -> None:
    """Widen every money column to BIGINT on Postgres."""
    if op.get_bind().dialect.name != "postgresql":
        return
    for table, column, nullable in COLUMNS:
        op.alter_column(table, column, type_=sa.BigInteger(), existing_type=sa.Integer(), existing_nullable=nullable)


def downgrade() -> None:
    """Narrow the money columns back to INTEGER on Postgres."""
    if op.get_bind().dialect.name != "postgresql":
        return
    for table, column, nullable in COLUMNS:
        op.alter_column(table, column, type_=sa.Integer(), existing_type=sa.BigInteger(), existing_nullable=nullable)
