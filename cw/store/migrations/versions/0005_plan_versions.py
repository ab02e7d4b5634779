"""Plans that evolve: each plan's version and content prints; the versions it replaced; each
initiative's revision (2026-12-03).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from cw.store.migrations._columns import add_columns, columns, drop_columns

revision, down_revision = "0005", "0004"


def upgrade() -> None:
    add_columns("initiatives", "revision int!=0")
    add_columns("plans", "version int!=1, prints json")
    op.create_table(
        "plan_versions",
        *columns("id int!, plan_id int!, version int!, content json!, replaced_at float!"),
        sa.ForeignKeyConstraint(["plan_id"], ["plans.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("plan_id", "version"),
    )


def downgrade() -> None:
    op.drop_table("plan_versions")
    drop_columns("plans", "prints", "version")
    drop_columns("initiatives", "revision")
