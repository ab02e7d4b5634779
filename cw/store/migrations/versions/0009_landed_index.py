"""An index on merges (state, finished_at): the merge train asks for the newest merge that
landed before each pass (``Store.last_landed``), which was a sort of the whole table
(2026-12-06).
"""

from __future__ import annotations

from alembic import op

revision, down_revision = "0009", "0008"


def upgrade() -> None:
    op.create_index("ix_merges_landed", "merges", ["state", "finished_at"])


def downgrade() -> None:
    op.drop_index("ix_merges_landed", table_name="merges")
