"""message delivery: the attempt an answer went to, and when the notify hook ran

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30 09:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.add_column(sa.Column("delivered_attempt", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("notified_at", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.drop_column("notified_at")
        batch_op.drop_column("delivered_attempt")
