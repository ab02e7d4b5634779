"""Message delivery: the attempt an answer went to, and when the notify hook ran (2026-11-30)."""

from __future__ import annotations

from cw.store.migrations._columns import add_columns, drop_columns

revision, down_revision = "0002", "0001"


def upgrade() -> None:
    add_columns("messages", "delivered_attempt int, notified_at float")


def downgrade() -> None:
    drop_columns("messages", "notified_at", "delivered_attempt")
