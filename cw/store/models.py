"""The database schema: SQLAlchemy 2.x typed models. Times are UNIX seconds (float, UTC)."""

from __future__ import annotations

from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    case,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from cw.states import TaskState


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {dict[str, Any]: JSON, list[str]: JSON}


class District(Base):
    """The district itself: one row, made with the database at `cw init`. Its random ``uid``
    keeps a new district in the same repository from meeting the old one's agent sessions."""

    __tablename__ = "district"

    id: Mapped[int] = mapped_column(primary_key=True)
    uid: Mapped[str] = mapped_column(String(36))
    created_at: Mapped[float] = mapped_column(Float)
    # When cw first put its marker key in the broker: from then on a missing marker means the
    # broker lost its messages (before, it only means nothing was ever sent).
    broker_marked_at: Mapped[float | None] = mapped_column(Float)


class AdapterPause(Base):
    """A usage limit is the whole account's: while one is in force, no new agent of that
    adapter starts, on any worker or host. Running agents are left alone."""

    __tablename__ = "adapter_pauses"

    adapter: Mapped[str] = mapped_column(String(40), primary_key=True)
    until: Mapped[float] = mapped_column(Float)  # the limit's reset time, plus a little jitter
    reason: Mapped[str] = mapped_column(Text, default="")
    paused_at: Mapped[float] = mapped_column(Float)
    task_id: Mapped[int | None] = mapped_column(Integer)  # the task whose agent hit the limit


class Initiative(Base):
    __tablename__ = "initiatives"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    source: Mapped[str] = mapped_column(Text)
    created_at: Mapped[float] = mapped_column(Float)
    budget_usd: Mapped[float | None] = mapped_column(Float)  # no new work once spent
    budget_tokens: Mapped[int | None] = mapped_column(Integer)  # likewise, in tokens
    review: Mapped[str | None] = mapped_column(String(10))  # auto | manual; None: inherited
    # + 1 by every submit that changes the initiative: a snapshot read before is still whole.
    revision: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    phases: Mapped[list[Phase]] = relationship(
        back_populates="initiative", order_by="Phase.position"
    )


class Phase(Base):
    __tablename__ = "phases"
    __table_args__ = (UniqueConstraint("initiative_id", "key"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    initiative_id: Mapped[int] = mapped_column(ForeignKey("initiatives.id"))
    key: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(Text, default="")
    position: Mapped[int] = mapped_column(Integer)
    extra: Mapped[dict[str, Any]] = mapped_column(default=dict)
    initiative: Mapped[Initiative] = relationship(back_populates="phases")
    plans: Mapped[list[Plan]] = relationship(back_populates="phase", order_by="Plan.position")


class Plan(Base):
    __tablename__ = "plans"
    __table_args__ = (UniqueConstraint("phase_id", "key"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    phase_id: Mapped[int] = mapped_column(ForeignKey("phases.id"))
    key: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(Text, default="")
    objective: Mapped[str] = mapped_column(Text, default="")
    context: Mapped[str] = mapped_column(Text, default="")
    position: Mapped[int] = mapped_column(Integer)
    budget_usd: Mapped[float | None] = mapped_column(Float)  # no new work once spent
    budget_tokens: Mapped[int | None] = mapped_column(Integer)  # likewise, in tokens
    review: Mapped[str | None] = mapped_column(String(10))  # auto | manual; None: inherited
    extra: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # 1, then + 1 each time a submit updates the plan in place (its old content: PlanVersion).
    version: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    # What the plan held when stored, as :func:`cw.plans.diff.prints` says: a submit compares
    # these, not bytes. None for plans stored before versions existed (computed from the rows).
    prints: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    phase: Mapped[Phase] = relationship(back_populates="plans")


class PlanVersion(Base):
    """A plan's content before a submit updated it in place: kept for `cw plan show`."""

    __tablename__ = "plan_versions"
    __table_args__ = (UniqueConstraint("plan_id", "version"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    plan_id: Mapped[int] = mapped_column(ForeignKey("plans.id"))
    version: Mapped[int] = mapped_column(Integer)
    content: Mapped[dict[str, Any]] = mapped_column()
    replaced_at: Mapped[float] = mapped_column(Float)


class Task(Base):
    __tablename__ = "tasks"
    __table_args__ = (
        UniqueConstraint("initiative_id", "key"),
        Index("ix_tasks_state", "state"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    initiative_id: Mapped[int] = mapped_column(ForeignKey("initiatives.id"))
    plan_id: Mapped[int] = mapped_column(ForeignKey("plans.id"), index=True)
    key: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(Text)
    kind: Mapped[str] = mapped_column(String(40), default="auto")
    prompt: Mapped[str] = mapped_column(Text, default="")
    files: Mapped[list[str]] = mapped_column(default=list)
    verify: Mapped[str | None] = mapped_column(Text)
    done_criteria: Mapped[str | None] = mapped_column(Text)
    priority: Mapped[int] = mapped_column(Integer, default=0)
    # Tasks on the longest chain from this one to the end of the DAG: ready tasks that unlock
    # longer chains are dispatched first (critical path first).
    height: Mapped[int] = mapped_column(Integer, default=1)
    position: Mapped[int] = mapped_column(Integer)
    state: Mapped[TaskState] = mapped_column(
        Enum(
            TaskState, native_enum=False, length=20, values_callable=lambda e: [m.value for m in e]
        )
    )
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    state_changed_at: Mapped[float] = mapped_column(Float)
    created_at: Mapped[float] = mapped_column(Float)
    branch: Mapped[str | None] = mapped_column(String(255))
    worktree: Mapped[str | None] = mapped_column(Text)
    base_sha: Mapped[str | None] = mapped_column(String(64))
    head_sha: Mapped[str | None] = mapped_column(String(64))
    merged_sha: Mapped[str | None] = mapped_column(String(64))
    conflict_files: Mapped[list[str]] = mapped_column(default=list)
    last_error: Mapped[str | None] = mapped_column(Text)
    stop_requested_at: Mapped[float | None] = mapped_column(Float)
    bounces: Mapped[int] = mapped_column(Integer, default=0)  # times sent back by the merge
    bounce: Mapped[dict[str, Any]] = mapped_column(default=dict)  # why, for the agent's next go
    # state review: the check it passed in its worktree (command, exit code, output)
    review_check: Mapped[dict[str, Any] | None] = mapped_column()
    # A ready task is not claimed before this time (its agent hit a usage limit until then).
    not_before: Mapped[float | None] = mapped_column(Float)
    resent_at: Mapped[float | None] = mapped_column(Float)  # the reconciler re-sent its message
    extra: Mapped[dict[str, Any]] = mapped_column(default=dict)
    plan: Mapped[Plan] = relationship()


def columns(model: Any, names: str) -> list[Any]:
    """A model's (or an alias's) columns by name (``"id key state"``), to select them."""
    return [getattr(model, name) for name in names.split()]


#: 1 for a task that is done though its agent committed nothing (its branch never left its
#: base), else 0: listings mark it "no changes".
NO_CHANGES = case(
    (
        (Task.state == TaskState.DONE)
        & Task.base_sha.is_not(None)
        & (Task.head_sha == Task.base_sha),
        1,
    ),
    else_=0,
)


class TaskDependency(Base):
    __tablename__ = "task_dependencies"

    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id"), primary_key=True)
    depends_on_id: Mapped[int] = mapped_column(ForeignKey("tasks.id"), primary_key=True, index=True)


class Agent(Base):
    """One agent per task: a name people can say, and the session it keeps across attempts."""

    __tablename__ = "agents"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id"), unique=True)
    adapter: Mapped[str] = mapped_column(String(40))
    session_id: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[float] = mapped_column(Float)
    last_activity_at: Mapped[float | None] = mapped_column(Float)
    cost_usd: Mapped[float] = mapped_column(Float, default=0.0)
    tokens: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    task: Mapped[Task] = relationship()


class AgentRun(Base):
    """One attempt of an agent at its task: the process, its lease and what came of it."""

    __tablename__ = "agent_runs"
    __table_args__ = (UniqueConstraint("task_id", "attempt"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id"))
    agent_id: Mapped[int] = mapped_column(ForeignKey("agents.id"), index=True)
    attempt: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(20))  # running | succeeded | failed | lost
    worker: Mapped[str] = mapped_column(String(255), default="")
    host: Mapped[str] = mapped_column(String(255), default="")
    pid: Mapped[int | None] = mapped_column(Integer)
    worktree: Mapped[str | None] = mapped_column(Text)
    session_id: Mapped[str | None] = mapped_column(String(64))
    started_at: Mapped[float] = mapped_column(Float)
    heartbeat_at: Mapped[float] = mapped_column(Float)
    lease_expires_at: Mapped[float] = mapped_column(Float)
    finished_at: Mapped[float | None] = mapped_column(Float)
    exit_code: Mapped[int | None] = mapped_column(Integer)
    cost_usd: Mapped[float | None] = mapped_column(Float)
    turns: Mapped[int | None] = mapped_column(Integer)
    usage: Mapped[dict[str, Any]] = mapped_column(default=dict)  # tokens, as the CLI reports
    tokens: Mapped[int] = mapped_column(Integer, default=0, server_default="0")  # records.Tokens
    duration_ms: Mapped[int | None] = mapped_column(Integer)
    summary: Mapped[str | None] = mapped_column(Text)
    error: Mapped[str | None] = mapped_column(Text)
    stdout_path: Mapped[str | None] = mapped_column(Text)
    stderr_path: Mapped[str | None] = mapped_column(Text)


class Message(Base):
    """A question from an agent or a checkpoint, and the person's answer."""

    __tablename__ = "messages"

    id: Mapped[int] = mapped_column(primary_key=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id"), index=True)
    agent_id: Mapped[int | None] = mapped_column(ForeignKey("agents.id"))
    thread_id: Mapped[int | None] = mapped_column(ForeignKey("messages.id"))
    author: Mapped[str] = mapped_column(String(20))  # agent | checkpoint | user
    extra_id: Mapped[str] = mapped_column(String(64), default="")  # the agent's question id
    body: Mapped[str] = mapped_column(Text)
    options: Mapped[list[str]] = mapped_column(default=list)
    multi_select: Mapped[bool] = mapped_column(default=False)
    state: Mapped[str] = mapped_column(String(20), default="pending")  # pending | answered | closed
    answer: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[float] = mapped_column(Float)
    answered_at: Mapped[float | None] = mapped_column(Float)
    delivered_attempt: Mapped[int | None] = mapped_column(Integer)  # the attempt that heard it
    notified_at: Mapped[float | None] = mapped_column(Float)  # when the notify hook ran for it


class Merge(Base):
    """One attempt to integrate a task's branch."""

    __tablename__ = "merges"
    __table_args__ = (
        UniqueConstraint("task_id", "attempt"),
        Index("ix_merges_landed", "state", "finished_at"),  # the newest merge that landed
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id"))
    attempt: Mapped[int] = mapped_column(Integer)
    # queued | merging | merged | conflict | verify_failed | failed
    state: Mapped[str] = mapped_column(String(20))
    branch: Mapped[str] = mapped_column(String(255))
    base_sha: Mapped[str | None] = mapped_column(String(64))
    result_sha: Mapped[str | None] = mapped_column(String(64))
    conflict_files: Mapped[list[str]] = mapped_column(default=list)
    queued_at: Mapped[float] = mapped_column(Float)
    started_at: Mapped[float | None] = mapped_column(Float)
    finished_at: Mapped[float | None] = mapped_column(Float)
    output: Mapped[str | None] = mapped_column(Text)
    verify_command: Mapped[str | None] = mapped_column(Text)
    verify_exit_code: Mapped[int | None] = mapped_column(Integer)
    verify_output: Mapped[str | None] = mapped_column(Text)


class Event(Base):
    """Append-only log: every state change writes one row."""

    __tablename__ = "events"

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[float] = mapped_column(Float)
    kind: Mapped[str] = mapped_column(String(40))
    task_id: Mapped[int | None] = mapped_column(Integer, index=True)
    attempt: Mapped[int | None] = mapped_column(Integer)
    data: Mapped[dict[str, Any]] = mapped_column(default=dict)
