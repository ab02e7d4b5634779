"""The district: its own random id (agents' session ids derive from it); when it marked its broker.

Written 2026-12-03.
"""

from __future__ import annotations

import time
import uuid

import sqlalchemy as sa
from alembic import op

from cw.store.migrations._columns import columns

revision, down_revision = "0004", "0003"


def upgrade() -> None:
    district = op.create_table(
        "district",
        *columns("id int!, uid str36!, created_at float!, broker_marked_at float"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.bulk_insert(district, [{"id": 1, "uid": str(uuid.uuid4()), "created_at": time.time()}])


def downgrade() -> None:
    op.drop_table("district")
