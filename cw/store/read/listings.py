"""Listings: what ``cw task list``, ``cw agent list``, ``cw message list``, ``cw budget list``,
``cw limits list`` and ``cw plan list|show`` show."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cw.states import TaskState
from cw.store.read.row import Row, short_count
from cw.store.records import ReviewCheck


@dataclass(frozen=True)
class TaskListing(Row):
    """A task with its place in the hierarchy and its agent."""

    id: int
    key: str
    name: str
    kind: str
    state: TaskState
    attempt: int
    branch: str | None
    last_error: str | None
    state_changed_at: float
    plan: str
    phase: str
    initiative: str
    agent: str | None
    cost_usd: float
    tokens: int  # every token its agent's runs processed (records.Tokens.total)
    no_changes: bool  # done, but its agent committed nothing


@dataclass(frozen=True)
class AgentListing(Row):
    """An agent with its task and its latest attempt, as stored."""

    id: int
    name: str
    adapter: str
    session_id: str | None
    cost_usd: float
    tokens: int
    last_activity_at: float | None
    task_id: int
    task: str
    task_state: TaskState
    worktree: str | None
    run_state: str | None
    attempt: int | None
    worker: str | None
    host: str | None
    pid: int | None
    started_at: float | None
    finished_at: float | None
    lease_expires_at: float | None
    heartbeat_at: float | None  # the last renewal of its lease


@dataclass(frozen=True)
class AgentView(Row):
    """An agent as people see it: ``state`` is its latest attempt's (``unresponsive``: its
    lease expired), the pid only while it runs."""

    name: str
    task_id: int
    task: str
    state: str
    attempt: int | None
    worktree: str | None
    session_id: str | None
    worker: str | None
    host: str | None
    pid: int | None
    runtime_seconds: float | None
    last_activity_at: float | None
    cost_usd: float
    tokens: int


@dataclass(frozen=True)
class MessageListing(Row):
    """A message as ``cw message list`` shows it."""

    id: int
    task_id: int
    task: str
    agent: str | None
    author: str
    body: str
    options: list[str]
    multi_select: bool
    state: str
    answer: str | None
    thread_id: int | None
    extra_id: str
    created_at: float
    answered_at: float | None


@dataclass(frozen=True)
class MessageDetail(MessageListing):
    """A message as ``cw message show`` and the notification hook see it."""

    task_name: str
    task_state: str


@dataclass(frozen=True)
class Budget(Row):
    """A plan's or an initiative's budget and what has been spent under it."""

    kind: str  # plan | initiative
    id: int
    name: str
    budget_usd: float | None  # None: no cap in dollars
    budget_tokens: int | None  # None: no cap in tokens
    spent_usd: float
    spent_tokens: int
    exhausted: bool  # spent in dollars or in tokens: no new work starts under it

    @classmethod
    def of(cls, kind: str, id: int, name: str, caps: Sequence[Any], spent: Sequence[Any]) -> Budget:
        """From its caps (dollars, tokens; None: none) and what has been spent in each."""
        (usd, tokens), (spent_usd, spent_tokens) = caps, (float(spent[0]), int(spent[1]))
        over = (usd is not None and spent_usd >= usd) or (
            tokens is not None and spent_tokens >= tokens
        )
        return cls(kind, id, name, usd, tokens, spent_usd, spent_tokens, over)

    def describe(self) -> str:
        """What it caps and what has been spent, in each unit it caps."""
        caps = []
        if self.budget_usd is not None:
            caps.append(f"${self.spent_usd:.2f} of ${self.budget_usd:.2f}")
        if self.budget_tokens is not None:
            caps.append(
                f"{short_count(self.spent_tokens)} of {short_count(self.budget_tokens)} tokens"
            )
        return f"{self.kind} {self.name}: {', '.join(caps)}"


@dataclass(frozen=True)
class Pause(Row):
    """An adapter whose new agents wait: a usage limit of its account is in force."""

    adapter: str
    until: float
    reason: str
    paused_at: float
    task: str | None  # the task whose agent hit the limit

    def describe(self, now: float | None = None) -> str:
        """One line for a person: what is paused, until when (in UTC, its date too unless it is
        today's), and how to lift it."""
        until = utc_time(self.until, time.time() if now is None else now)
        hit = f" (task {self.task} hit it)" if self.task else ""
        return (
            f"{self.adapter} paused by a usage limit until {until}{hit}: no new {self.adapter} "
            "agent starts; `cw limits resume` lifts it"
        )


def utc_time(at: float, now: float) -> str:
    """``14:05:00 UTC``, or ``2025-06-03 14:05:00 UTC`` on another day than ``now``'s."""
    day = "" if time.gmtime(at)[:3] == time.gmtime(now)[:3] else "%Y-%m-%d "
    return time.strftime(f"{day}%H:%M:%S UTC", time.gmtime(at))


@dataclass(frozen=True)
class PlanListing(Row):
    """A plan as ``cw plan list`` shows it: its place, version, source and tasks' states."""

    id: int
    initiative: str
    phase: str
    phase_name: str
    plan: str
    name: str
    version: int
    source: str
    tasks: int
    done: int
    states: dict[str, int]
    started: bool  # one of its tasks has run (an attempt begun), whatever its state now
    state: str  # the tasks' states rolled up


def plan_state(states: Mapping[str, int], started: bool) -> str:
    """A plan's state in one word (docs/plan-format.md), as ``cw status``, the page and the
    file UI show it: ``states`` counts its tasks by state, ``started`` says one of them has run
    (an attempt begun, whatever its state now: :class:`PlanListing`'s ``started``)."""
    from cw.plans.diff import rollup  # the plan comparison: only where plans are listed

    return rollup([state for state, n in states.items() if n], started)


@dataclass(frozen=True)
class PlanTask(Row):
    id: int
    key: str
    name: str
    state: str


@dataclass(frozen=True)
class ReplacedVersion(Row):
    """A version of a plan that submitting a changed plan replaced."""

    version: int
    replaced_at: float
    source: str
    tasks: list[str]
    content: dict[str, Any]  # the plan as it was stored


@dataclass(frozen=True)
class PlanDetail(PlanListing):
    """A plan as ``cw plan show`` shows it."""

    objective: str
    task_rows: list[PlanTask]
    versions: list[ReplacedVersion]


@dataclass(frozen=True)
class ReviewListing(Row):
    """A task whose finished work waits for a person's review."""

    id: int
    key: str
    name: str
    plan: str
    agent: str
    attempt: int
    branch: str | None
    worktree: str | None
    base_sha: str | None
    head_sha: str | None
    since: float  # when it entered review
    cost_usd: float
    tokens: int
    summary: str | None  # what the agent said it did
    check: ReviewCheck  # the check it passed in its worktree
