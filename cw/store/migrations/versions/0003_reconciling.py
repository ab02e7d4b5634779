"""Reconciling: when a parked task may start again, and when its lost message was re-sent.

Written 2026-12-07.
"""

from __future__ import annotations

from cw.store.migrations._columns import add_columns, drop_columns

revision, down_revision = "0003", "0002"


def upgrade() -> None:
    add_columns("tasks", "not_before float, resent_at float")


def downgrade() -> None:
    drop_columns("tasks", "resent_at", "not_before")
