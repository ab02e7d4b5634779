"""district: its own random id (agents' session ids derive from it); when it marked its broker

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03 10:00:00.000000
"""

from __future__ import annotations

import time
import uuid

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    district = op.create_table(
        "district",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("uid", sa.String(length=36), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("broker_marked_at", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.bulk_insert(district, [{"id": 1, "uid": str(uuid.uuid4()), "created_at": time.time()}])


def downgrade() -> None:
    op.drop_table("district")
