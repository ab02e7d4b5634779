"""What ``cw status`` and ``cw merge status`` show."""

from __future__ import annotations

from dataclasses import dataclass, field

from cw.states import TaskState
from cw.store.read.listings import AgentView, Budget, Pause, plan_state
from cw.store.read.row import Row


@dataclass(frozen=True)
class QueueEntry(Row):
    """A task's merge attempt as a section of ``cw merge status`` lists it."""

    task: str
    task_id: int
    attempt: int
    branch: str
    task_state: TaskState


@dataclass(frozen=True)
class Queued(QueueEntry):
    queued_at: float
    waiting_seconds: float | None


@dataclass(frozen=True)
class InProgress(QueueEntry):
    started_at: float | None
    running_seconds: float | None


@dataclass(frozen=True)
class Merged(QueueEntry):
    sha: str | None
    finished_at: float | None


@dataclass(frozen=True)
class Conflict(QueueEntry):
    files: list[str]
    finished_at: float | None


@dataclass(frozen=True)
class Failure(QueueEntry):
    state: str  # failed | verify_failed
    error: str  # the last line of the verify's or the merge's output
    finished_at: float | None


@dataclass(frozen=True, eq=False)  # equal to a mapping of the same fields, as a dict was
class Bounce(Row):
    """A task the merge sent back to its agent: ``bounces`` times, in ``merge_attempts``."""

    task: str
    merge_attempts: int
    bounces: int


@dataclass(frozen=True)
class MergeStatus(Row):
    """What ``cw merge status`` shows."""

    queued: list[Queued]  # in queue order
    in_progress: list[InProgress]
    merged: list[Merged]  # the most recent, newest first
    conflicts: list[Conflict]  # tasks whose newest merge conflicted
    failures: list[Failure]  # tasks whose newest merge failed
    bounces: list[Bounce]


# -- cw status -------------------------------------------------------------------------------


@dataclass(frozen=True)
class PlanSummary(Row):
    """A plan as ``cw status`` and the page show it; its ``state`` is :func:`plan_state` of
    its counts, so no reader can say another word for them."""

    initiative: str
    phase: str
    plan: str
    done: int
    total: int
    states: dict[str, int]
    cost_usd: float
    tokens: int
    started: bool = False  # one of its tasks has run (an attempt begun), whatever its state now
    state: str = field(init=False)  # its tasks' states rolled up in one word

    def __post_init__(self) -> None:
        object.__setattr__(self, "state", plan_state(self.states, self.started))


@dataclass(frozen=True)
class Blocked(Row):
    task: str
    state: TaskState
    waits_on: list[str]


@dataclass(frozen=True)
class Attention(Row):
    task: str
    state: TaskState
    error: str | None


@dataclass(frozen=True)
class Status(Row):
    """What ``cw status`` shows."""

    counts: dict[str, int]
    total: int
    cost_usd: float
    costs: dict[str, dict[str, float]]  # initiative, initiative/phase, initiative/phase/plan
    tokens: int
    token_counts: dict[str, dict[str, int]]  # rolled up as ``costs``
    budgets: list[Budget]
    plans: list[PlanSummary]
    running: list[AgentView]
    blocked: list[Blocked]
    attention: list[Attention]
    messages_pending: int
    no_changes: list[str]
    paused: list[Pause]  # adapters whose new agents wait for a usage limit's reset
    queued_since: float | None = None  # when the longest-queued task was sent to the workers
