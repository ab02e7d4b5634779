"""Usage limits pause an adapter: one row per adapter whose new agents wait for a reset.

Written 2026-12-03.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from cw.store.migrations._columns import columns

revision, down_revision = "0006", "0005"


def upgrade() -> None:
    op.create_table(
        "adapter_pauses",
        *columns("adapter str40!, until float!, reason text!, paused_at float!, task_id int"),
        sa.PrimaryKeyConstraint("adapter"),
    )


def downgrade() -> None:
    op.drop_table("adapter_pauses")
