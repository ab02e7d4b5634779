"""usage limits pause an adapter: one row per adapter whose new agents wait for a reset

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03 17:20:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "adapter_pauses",
        sa.Column("adapter", sa.String(length=40), nullable=False),
        sa.Column("until", sa.Float(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("paused_at", sa.Float(), nullable=False),
        sa.Column("task_id", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("adapter"),
    )


def downgrade() -> None:
    op.drop_table("adapter_pauses")
