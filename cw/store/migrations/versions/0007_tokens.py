"""Budgets in tokens: tokens spent per run and per agent, and token budgets on plans and
initiatives (2026-12-04).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from cw.store.migrations._columns import add_columns, drop_columns
from cw.store.records import Tokens

revision, down_revision = "0007", "0006"

BUDGETED = ("plans", "initiatives")


def upgrade() -> None:
    for table in ("agent_runs", "agents"):
        add_columns(table, "tokens int!=0")
    for table in BUDGETED:
        add_columns(table, "budget_tokens int")
    _count_recorded_runs()


def _count_recorded_runs() -> None:
    """Runs recorded before this revision kept their usage as the CLI reported it: count it."""
    bind = op.get_bind()
    runs = sa.table(
        "agent_runs",
        sa.column("id"),
        sa.column("agent_id"),
        sa.column("usage", sa.JSON),
        sa.column("tokens"),
    )
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
        drop_columns(table, "budget_tokens")
    for table in ("agents", "agent_runs"):
        drop_columns(table, "tokens")
