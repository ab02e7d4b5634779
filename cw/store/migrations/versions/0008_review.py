"""Review before merge: a plan's or an initiative's review mode, and the check a task passed in
its worktree before it waited for review (2026-12-04).
"""

from __future__ import annotations

from cw.store.migrations._columns import add_columns, drop_columns

revision, down_revision = "0008", "0007"


def upgrade() -> None:
    for table in ("plans", "initiatives"):
        add_columns(table, "review str10")
    add_columns("tasks", "review_check json")


def downgrade() -> None:
    drop_columns("tasks", "review_check")
    for table in ("initiatives", "plans"):
        drop_columns(table, "review")
