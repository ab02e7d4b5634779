"""budgets in tokens: tokens spent per run and per agent, and token budgets on plans and
initiatives

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04 16:20:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from cw.store.records import Tokens

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

BUDGETED = ("plans", "initiatives")


def upgrade() -> None:
    for table in ("agent_runs", "agents"):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(
                sa.Column("tokens", sa.Integer(), nullable=False, server_default="0")
            )
    for table in BUDGETED:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(sa.Column("budget_tokens", sa.Integer(), nullable=True))
    _count_recorded_runs()


def _count_recorded_runs() -> None:
    """Runs recorded before this revision kept their usage as the CLI reported it: count it."""
    bind = op.get_bind()
    runs = sa.table(
        "agent_runs", sa.column("id"), sa.column("agent_id"), sa.column("usage", sa.JSON),
        sa.column("tokens"),
    )  # fmt: skip
    agents = sa.table("agents", sa.column("id"), sa.column("tokens"))
    per_agent: dict[int, int] = {}
    for run_id, agent_id, usage in bind.execute(
        sa.select(runs.c.id, runs.c.agent_id, runs.c.usage)
    ):
        total = Tokens.of(usage or {}).total
        if total:
            bind.execute(runs.update().where(runs.c.id == run_id).values(tokens=total))
            per_agent[agent_id] = per_agent.get(agent_id, 0) + total
    for agent_id, total in per_agent.items():
        bind.execute(agents.update().where(agents.c.id == agent_id).values(tokens=total))


def downgrade() -> None:
    for table in BUDGETED:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_column("budget_tokens")
    for table in ("agents", "agent_runs"):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_column("tokens")
