"""What the page shows, read from the store in one go: sections by what needs a person."""

from __future__ import annotations

import functools
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import func, select

from cw.git import branches
from cw.settings import Settings
from cw.states import TaskState
from cw.store import Store, db, views
from cw.store.models import Agent, Event
from cw.store.read import (
    AgentView,
    MessageListing,
    Pause,
    PlanSummary,
    ReviewListing,
    Row,
    TaskListing,
)

REVIEW = TaskState.REVIEW.value
FAILED = frozenset({"failed", "conflict"})
FINISHED = frozenset({"done", "cancelled"})
#: Running tasks show as their agents (the Running section); everything else not listed here
#: waits: on a dependency, a slot, the merge worker or a person's resume.
NOT_WAITING = FAILED | FINISHED | {REVIEW, "running"}
#: A long section shows its first rows and says how many more there are.
SECTION_ROWS = 200


@dataclass(frozen=True)
class Node(Row):
    key: str
    name: str
    state: str


@dataclass(frozen=True)
class PlanBoard(Row):
    """A plan's progress, its state in one word (``summary.state``) and its dependency
    graph."""

    summary: PlanSummary
    nodes: list[Node]  # in plan order
    edges: list[tuple[str, str]]  # (task key, key of a task it depends on)


@dataclass(frozen=True)
class Board(Row):
    """Everything the front page and ``/api/state`` show (docs/web.md lists the fields)."""

    generated_at: float
    change: str  # changes whenever something the page shows may have changed
    counts: dict[str, int]
    total: int
    cost_usd: float
    tokens: int
    paused: list[Pause]  # adapters whose new agents wait for a usage limit's reset
    needs_input: list[MessageListing]
    review: list[ReviewListing]  # finished work waiting for a person, the longest first
    diffstats: dict[str, str]  # task key -> its work against the integration branch, one line
    failed: list[TaskListing]
    running: list[AgentView]
    waiting: list[TaskListing]
    waits_on: dict[str, list[str]]  # task key -> keys of unfinished dependencies
    done: list[TaskListing]  # the most recently finished first
    more: dict[str, int]  # section -> rows not shown (SECTION_ROWS)
    plans: list[PlanBoard] = field(default_factory=list)


def read(store: Store, settings: Settings) -> Board:
    """The board as the store holds it now."""
    change = change_marker(store)
    with store.listing() as listings:
        reads = views.Reads.of(listings)
        status = views.status(listings, reads)
    tasks, pairs, questions = reads.tasks, reads.pairs, reads.pending
    asking = {m.task_id for m in questions}  # shown under Needs input, not again as waiting
    done = sorted(
        (t for t in tasks if t.state in FINISHED), key=lambda t: t.state_changed_at, reverse=True
    )
    review = store.review_rows()
    sections = {
        "failed": [t for t in tasks if t.state in FAILED],
        "waiting": [t for t in tasks if str(t.state) not in NOT_WAITING and t.id not in asking],
        "done": done,
    }
    shown = {name: rows[:SECTION_ROWS] for name, rows in sections.items()}
    return Board(
        generated_at=time.time(),
        change=change,
        counts=status.counts,
        total=status.total,
        cost_usd=status.cost_usd,
        tokens=status.tokens,
        paused=status.paused,
        needs_input=questions,
        running=status.running,
        waits_on={b.task: b.waits_on for b in status.blocked},
        review=review,
        diffstats={r.key: _diffstat(settings, r.branch, r.head_sha) for r in review[:SECTION_ROWS]},
        failed=shown["failed"],
        waiting=shown["waiting"],
        done=shown["done"],
        more={n: len(rows) - len(shown[n]) for n, rows in sections.items() if rows[SECTION_ROWS:]},
        plans=_plans(status.plans, tasks, pairs),
    )


def _diffstat(settings: Settings, branch: str | None, head: str | None) -> str:
    return _work_against(settings.repo, settings.integration_branch, branch, head)


@functools.lru_cache(maxsize=1024)
def _work_against(repo: Path, base: str, branch: str | None, head: str | None) -> str:
    """A task's diffstat, once per commit of its branch (``head``): a task in review does not
    move, and the board is read again at every change of the district."""
    return branches.diffstat(repo, base, branch)


def _plans(
    summaries: list[PlanSummary], tasks: list[TaskListing], pairs: list[tuple[int, int]]
) -> list[PlanBoard]:
    where = {t.id: (t.initiative, t.phase, t.plan) for t in tasks}
    keys = {t.id: t.key for t in tasks}
    nodes: dict[tuple[str, str, str], list[Node]] = defaultdict(list)
    for t in tasks:
        nodes[where[t.id]].append(Node(t.key, t.name, str(t.state)))
    edges: dict[tuple[str, str, str], list[tuple[str, str]]] = defaultdict(list)
    for task_id, dep_id in pairs:
        if where[task_id] == where[dep_id]:
            edges[where[task_id]].append((keys[task_id], keys[dep_id]))
    ordered = sorted(summaries, key=lambda p: (p.initiative, p.phase, p.plan))
    return [
        PlanBoard(p, nodes[(p.initiative, p.phase, p.plan)], edges[(p.initiative, p.phase, p.plan)])
        for p in ordered
    ]


#: Events this far below the newest are counted: on PostgreSQL one may commit after a later
#: one (its id taken first), leaving the newest id as it was.
LATE_EVENT_WINDOW = 1000


def change_marker(store: Store) -> str:
    """Cheap to read, different after any change the page shows: every state change writes an
    event (counted near the newest, for those committed late), and agents' activity (cost,
    tokens) moves ``last_activity_at``."""
    newest = select(func.max(Event.id)).scalar_subquery()
    recent = select(func.count()).where(Event.id > newest - LATE_EVENT_WINDOW).scalar_subquery()
    active = select(func.max(Agent.last_activity_at)).scalar_subquery()
    with db.reading(store.engine).connect() as connection:  # no write lock for a read
        event, count, activity = connection.execute(select(newest, recent, active)).one()
    return f"{event or 0}:{count}:{activity or 0}"
