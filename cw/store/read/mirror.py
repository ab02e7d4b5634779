"""The rows of the file-system mirror (:mod:`cw.fsui`)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from cw.store.read.listings import Pause, plan_state


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
    state: str  # its tasks' states rolled up in one word, as plan_state says


def plan_progress(counts: Iterable[Sequence[Any]]) -> list[PlanProgress]:
    """Each plan's progress, from its tasks counted by state: rows of (plan id, initiative,
    phase, plan, task state, tasks in it, how many of those have run), in plan order."""
    places: dict[int, tuple[str, str, str]] = {}
    states: dict[int, dict[str, int]] = defaultdict(dict)
    started: set[int] = set()
    for plan_id, initiative, phase, plan, state, tasks, ran in counts:
        places[plan_id] = (initiative, phase, plan)
        states[plan_id][str(state)] = tasks
        if ran:
            started.add(plan_id)
    return [
        PlanProgress(
            *place,
            done=states[plan_id].get("done", 0),
            total=sum(states[plan_id].values()),
            state=plan_state(states[plan_id], plan_id in started),
        )
        for plan_id, place in places.items()
    ]


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
