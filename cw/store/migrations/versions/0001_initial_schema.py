"""The initial schema (2026-11-24)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

from cw.store.migrations._columns import columns

revision, down_revision = "0001", None

TASK_STATES = "pending ready queued running merging done waiting conflict failed blocked cancelled"


def upgrade() -> None:
    _table("events", "id int!, at float!, kind str40!, task_id int, attempt int, data json!")
    _index("events", "task_id")
    _table(
        "initiatives",
        "id int!, name str200!, description text!, source text!, created_at float!",
        "budget_usd float",
        unique=["name"],
    )
    _table(
        "phases",
        "id int!, initiative_id int! -> initiatives.id, key str64!, name text!, position int!",
        "extra json!",
        unique=["initiative_id key"],
    )
    _table(
        "plans",
        "id int!, phase_id int! -> phases.id, key str64!, name text!, objective text!",
        "context text!, position int!, budget_usd float, extra json!",
        unique=["phase_id key"],
    )
    _tasks()
    _table(
        "agents",
        "id int!, name str64!, task_id int! -> tasks.id, adapter str40!, session_id str64",
        "created_at float!, last_activity_at float, cost_usd float!",
        unique=["name", "task_id"],
    )
    _table(
        "merges",
        "id int!, task_id int! -> tasks.id, attempt int!, state str20!, branch str255!",
        "base_sha str64, result_sha str64, conflict_files json!, queued_at float!",
        "started_at float, finished_at float, output text, verify_command text",
        "verify_exit_code int, verify_output text",
        unique=["task_id attempt"],
    )
    _table(
        "task_dependencies",
        "task_id int! -> tasks.id, depends_on_id int! -> tasks.id",
        key="task_id depends_on_id",
    )
    _index("task_dependencies", "depends_on_id")
    _table(
        "agent_runs",
        "id int!, task_id int! -> tasks.id, agent_id int! -> agents.id, attempt int!",
        "state str20!, worker str255!, host str255!, pid int, worktree text, session_id str64",
        "started_at float!, heartbeat_at float!, lease_expires_at float!",
        "finished_at float, exit_code int, cost_usd float, turns int, usage json!",
        "duration_ms int, summary text, error text, stdout_path text, stderr_path text",
        unique=["task_id attempt"],
    )
    _index("agent_runs", "agent_id")
    _table(
        "messages",
        "id int!, task_id int! -> tasks.id, agent_id int -> agents.id",
        "thread_id int -> messages.id, author str20!, extra_id str64!, body text!",
        "options json!, multi_select bool!, state str20!",
        "answer text, created_at float!, answered_at float",
    )
    _index("messages", "task_id")


def _tasks() -> None:
    state = sa.Enum(*TASK_STATES.split(), "stopped", name="taskstate", native_enum=False, length=20)
    _table(
        "tasks",
        "id int!, initiative_id int! -> initiatives.id, plan_id int! -> plans.id, key str64!",
        "name text!, kind str40!, prompt text!, files json!, verify text, done_criteria text",
        "priority int!, height int!, position int!",
        sa.Column("state", state, nullable=False),
        "attempt int!, state_changed_at float!, created_at float!, branch str255",
        "worktree text, base_sha str64, head_sha str64, merged_sha str64",
        "conflict_files json!, last_error text, stop_requested_at float, bounces int!",
        "bounce json!, extra json!",
        unique=["initiative_id key"],
    )
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_tasks_plan_id"), ["plan_id"], unique=False)
        batch_op.create_index("ix_tasks_state", ["state"], unique=False)


def _table(
    name: str, *specs: str | sa.Column[Any], unique: Sequence[str] = (), key: str = "id"
) -> None:
    """The table as Alembic's autogenerate writes it: the columns ``specs`` name, in order (as
    :func:`columns` reads them; ``name type -> table.column``: a foreign key too), its foreign
    keys by column name, its primary key (``key``'s columns), then a unique constraint for each
    of ``unique`` (its columns, space-separated)."""
    made: list[sa.Column[Any]] = []
    references: list[tuple[str, str]] = []
    for spec in specs:
        if isinstance(spec, sa.Column):
            made.append(spec)
            continue
        for item in spec.split(","):
            column, kind, *reference = item.split()
            made += columns(f"{column} {kind}")
            if reference:  # ["->", "table.column"]
                references.append((column, reference[-1]))
    op.create_table(
        name,
        *made,
        *(sa.ForeignKeyConstraint([column], [target]) for column, target in sorted(references)),
        sa.PrimaryKeyConstraint(*key.split()),
        *(sa.UniqueConstraint(*names.split()) for names in unique),
    )


def _index(table: str, column: str) -> None:
    """The index on one column Alembic names ``ix_<table>_<column>``."""
    with op.batch_alter_table(table, schema=None) as batch_op:
        batch_op.create_index(batch_op.f(f"ix_{table}_{column}"), [column], unique=False)


def downgrade() -> None:
    for table, column in (("messages", "task_id"), ("agent_runs", "agent_id")):
        _drop_index_and_table(table, f"ix_{table}_{column}")
    _drop_index_and_table("task_dependencies", "ix_task_dependencies_depends_on_id")
    op.drop_table("merges")
    op.drop_table("agents")
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.drop_index("ix_tasks_state")
        batch_op.drop_index(batch_op.f("ix_tasks_plan_id"))
    for table in ("tasks", "plans", "phases", "initiatives"):
        op.drop_table(table)
    _drop_index_and_table("events", "ix_events_task_id")


def _drop_index_and_table(table: str, index: str) -> None:
    with op.batch_alter_table(table, schema=None) as batch_op:
        batch_op.drop_index(batch_op.f(index))
    op.drop_table(table)
