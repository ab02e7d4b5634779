"""review before merge: a plan's or an initiative's review mode, and the check a task passed in
its worktree before it waited for review

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04 16:40:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    for table in ("plans", "initiatives"):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(sa.Column("review", sa.String(length=10), nullable=True))
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.add_column(sa.Column("review_check", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.drop_column("review_check")
    for table in ("initiatives", "plans"):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_column("review")
