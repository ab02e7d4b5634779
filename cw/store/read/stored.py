"""Stored rows as they are, every column: ``cw task show`` and the maintenance commands."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cw.states import TaskState
from cw.store.read.row import Row


@dataclass(frozen=True)
class AttemptRecord(Row):
    """One attempt of an agent at its task, every column as stored."""

    id: int
    task_id: int
    agent_id: int
    attempt: int
    state: str  # running | succeeded | failed | lost
    worker: str
    host: str
    pid: int | None
    worktree: str | None
    session_id: str | None
    started_at: float
    heartbeat_at: float
    lease_expires_at: float
    finished_at: float | None
    exit_code: int | None
    cost_usd: float | None
    turns: int | None
    usage: dict[str, Any]
    tokens: int
    duration_ms: int | None
    summary: str | None
    error: str | None
    stdout_path: str | None
    stderr_path: str | None


@dataclass(frozen=True)
class MergeRecord(Row):
    """One attempt to integrate a task's branch, every column as stored."""

    id: int
    task_id: int
    attempt: int
    state: str  # queued | merging | merged | conflict | verify_failed | failed
    branch: str
    base_sha: str | None
    result_sha: str | None
    conflict_files: list[str]
    queued_at: float
    started_at: float | None
    finished_at: float | None
    output: str | None
    verify_command: str | None
    verify_exit_code: int | None
    verify_output: str | None


@dataclass(frozen=True)
class MergeRow(MergeRecord):
    """A merge attempt with its task's key and state: what ``cw merge status`` and
    ``cw doctor`` read of the merge queue."""

    task: str
    task_state: TaskState


@dataclass(frozen=True)
class MessageRecord(Row):
    """A message, every column as stored."""

    id: int
    task_id: int
    agent_id: int | None
    thread_id: int | None
    author: str
    extra_id: str
    body: str
    options: list[str]
    multi_select: bool
    state: str
    answer: str | None
    created_at: float
    answered_at: float | None
    delivered_attempt: int | None
    notified_at: float | None


@dataclass(frozen=True)
class TaskDetail(Row):
    """A task as ``cw task show`` shows it: every column, its plan, dependencies, agent,
    attempts, merges and messages."""

    id: int
    initiative_id: int
    plan_id: int
    key: str
    name: str
    kind: str  # auto, or checkpoint:<what a person does>
    prompt: str
    files: list[str]  # the files its plan says it touches
    verify: str | None
    done_criteria: str | None
    priority: int
    height: int  # tasks on the longest chain from it to the end of the plan
    position: int
    state: TaskState
    attempt: int
    state_changed_at: float
    created_at: float
    branch: str | None
    worktree: str | None
    base_sha: str | None
    head_sha: str | None
    merged_sha: str | None
    conflict_files: list[str]
    last_error: str | None
    stop_requested_at: float | None
    bounces: int
    bounce: dict[str, Any]  # why the merge sent it back, for the agent's next go
    review_check: dict[str, Any] | None  # state review: the check it passed in its worktree
    not_before: float | None
    resent_at: float | None
    extra: dict[str, Any]
    plan: str
    no_changes: bool  # done, but its agent committed nothing
    depends_on: list[str]
    dependents: list[str]
    agent: str | None
    session_id: str | None
    runs: list[AttemptRecord]
    merges: list[MergeRecord]
    messages: list[MessageRecord]
    verify_treatment: str | None  # the merge gate its verify runs, and what the agent is told


@dataclass(frozen=True)
class TaskFootprint(Row):
    """What a task left in git: its branch, worktree and the commits it started, reached and
    was merged at; what ``cw gc`` and ``cw doctor`` check."""

    id: int
    key: str
    kind: str
    state: TaskState
    state_changed_at: float
    branch: str | None
    worktree: str | None
    base_sha: str | None
    head_sha: str | None
    merged_sha: str | None


@dataclass(frozen=True)
class EventRow(Row):
    """An entry of the append-only event log."""

    id: int
    at: float
    kind: str
    task_id: int | None
    attempt: int | None
    data: dict[str, Any]
