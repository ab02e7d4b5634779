"""The rows of the file-system mirror (:mod:`cw.fsui`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from cw.store.read.listings import Pause


@dataclass(frozen=True)
class TaskRow:
    id: int
    key: str
    name: str
    kind: str
    state: str
    attempt: int
    priority: int
    prompt: str
    verify: str | None
    done_criteria: str | None
    last_error: str | None
    conflict_files: list[str]
    state_changed_at: float
    initiative_id: int
    initiative: str
    phase: str
    plan: str
    agent: str | None
    no_changes: bool = False  # done, but its agent committed nothing
    check: str | None = None  # a GSD plan's whole <verify> text, the agent's check
    verify_mode: str | None = None  # automated | prose for a GSD <verify>; None: a command
    depends_on: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class AgentRow:
    id: int
    name: str
    adapter: str
    session_id: str | None
    cost_usd: float
    task_id: int
    task: str
    task_state: str
    worktree: str | None
    attempt: int | None
    run_state: str | None
    started_at: float | None
    finished_at: float | None
    summary: str | None
    error: str | None
    tokens: int  # every token its runs processed


@dataclass(frozen=True)
class MessageRow:
    """A message as the mirror renders it (its revision hashes these fields, by name)."""

    id: int
    task_id: int
    task: str
    task_state: str
    agent: str | None
    state: str
    author: str
    body: str
    options: list[str]
    multi_select: bool
    answer: str | None
    created_at: float
    answered_at: float | None


@dataclass(frozen=True)
class PlanProgress:
    initiative: str
    phase: str
    plan: str
    done: int
    total: int


@dataclass(frozen=True)
class Overview:
    """What STATUS.md shows: counts, and the short lists a person acts on."""

    counts: dict[str, int]
    plans: list[PlanProgress]
    pending: list[MessageRow]
    pending_total: int
    running: list[AgentRow]
    attention: list[TaskRow]
    attention_total: int
    no_changes: int = 0  # done tasks whose agent committed nothing
    paused: list[Pause] = field(default_factory=list)  # adapters waiting for a usage limit
