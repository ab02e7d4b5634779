"""The initial schema (2026-11-24)."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from cw.store.migrations._columns import columns

revision, down_revision = "0001", None

TASK_STATES = "pending ready queued running merging done waiting conflict failed blocked cancelled"


def upgrade() -> None:
    op.create_table(
        "events",
        *columns("id int!, at float!, kind str40!, task_id int, attempt int, data json!"),
        sa.PrimaryKeyConstraint("id"),
    )
    _index("events", "task_id")
    op.create_table(
        "initiatives",
        *columns("id int!, name str200!, description text!, source text!, created_at float!"),
        *columns("budget_usd float"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
    )
    op.create_table(
        "phases",
        *columns("id int!, initiative_id int!, key str64!, name text!, position int!, extra json!"),
        sa.ForeignKeyConstraint(["initiative_id"], ["initiatives.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("initiative_id", "key"),
    )
    op.create_table(
        "plans",
        *columns("id int!, phase_id int!, key str64!, name text!, objective text!, context text!"),
        *columns("position int!, budget_usd float, extra json!"),
        sa.ForeignKeyConstraint(["phase_id"], ["phases.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("phase_id", "key"),
    )
    _tasks()
    op.create_table(
        "agents",
        *columns("id int!, name str64!, task_id int!, adapter str40!, session_id str64"),
        *columns("created_at float!, last_activity_at float, cost_usd float!"),
        sa.ForeignKeyConstraint(["task_id"], ["tasks.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
        sa.UniqueConstraint("task_id"),
    )
    op.create_table(
        "merges",
        *columns("id int!, task_id int!, attempt int!, state str20!, branch str255!"),
        *columns("base_sha str64, result_sha str64, conflict_files json!, queued_at float!"),
        *columns("started_at float, finished_at float, output text, verify_command text"),
        *columns("verify_exit_code int, verify_output text"),
        sa.ForeignKeyConstraint(["task_id"], ["tasks.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("task_id", "attempt"),
    )
    op.create_table(
        "task_dependencies",
        *columns("task_id int!, depends_on_id int!"),
        sa.ForeignKeyConstraint(["depends_on_id"], ["tasks.id"]),
        sa.ForeignKeyConstraint(["task_id"], ["tasks.id"]),
        sa.PrimaryKeyConstraint("task_id", "depends_on_id"),
    )
    _index("task_dependencies", "depends_on_id")
    _agent_runs()
    _messages()


def _tasks() -> None:
    state = sa.Enum(*TASK_STATES.split(), "stopped", name="taskstate", native_enum=False, length=20)
    op.create_table(
        "tasks",
        *columns("id int!, initiative_id int!, plan_id int!, key str64!, name text!, kind str40!"),
        *columns("prompt text!, files json!, verify text, done_criteria text, priority int!"),
        *columns("height int!, position int!"),
        sa.Column("state", state, nullable=False),
        *columns("attempt int!, state_changed_at float!, created_at float!, branch str255"),
        *columns("worktree text, base_sha str64, head_sha str64, merged_sha str64"),
        *columns("conflict_files json!, last_error text, stop_requested_at float, bounces int!"),
        *columns("bounce json!, extra json!"),
        sa.ForeignKeyConstraint(["initiative_id"], ["initiatives.id"]),
        sa.ForeignKeyConstraint(["plan_id"], ["plans.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("initiative_id", "key"),
    )
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_tasks_plan_id"), ["plan_id"], unique=False)
        batch_op.create_index("ix_tasks_state", ["state"], unique=False)


def _agent_runs() -> None:
    op.create_table(
        "agent_runs",
        *columns("id int!, task_id int!, agent_id int!, attempt int!, state str20!"),
        *columns("worker str255!, host str255!, pid int, worktree text, session_id str64"),
        *columns("started_at float!, heartbeat_at float!, lease_expires_at float!"),
        *columns("finished_at float, exit_code int, cost_usd float, turns int, usage json!"),
        *columns("duration_ms int, summary text, error text, stdout_path text, stderr_path text"),
        sa.ForeignKeyConstraint(["agent_id"], ["agents.id"]),
        sa.ForeignKeyConstraint(["task_id"], ["tasks.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("task_id", "attempt"),
    )
    _index("agent_runs", "agent_id")


def _messages() -> None:
    op.create_table(
        "messages",
        *columns("id int!, task_id int!, agent_id int, thread_id int, author str20!"),
        *columns("extra_id str64!, body text!, options json!, multi_select bool!, state str20!"),
        *columns("answer text, created_at float!, answered_at float"),
        sa.ForeignKeyConstraint(["agent_id"], ["agents.id"]),
        sa.ForeignKeyConstraint(["task_id"], ["tasks.id"]),
        sa.ForeignKeyConstraint(["thread_id"], ["messages.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    _index("messages", "task_id")


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
