"""What ``cw status``, ``cw task list`` and ``cw agent list`` show, as :mod:`cw.store.read` rows."""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from cw.plans.gsdnames import is_phase_number, phase_order
from cw.states import TaskState
from cw.store.read import (
    AgentListing,
    AgentView,
    Attention,
    Blocked,
    MessageListing,
    PlanSummary,
    Status,
    TaskListing,
)
from cw.store.selects import Listings

S = TaskState
N = TypeVar("N", int, float)


def task_list(store: Listings, state: str | None = None) -> list[TaskListing]:
    return [r for r in store.task_rows() if state is None or r.state == state]


def agent_list(store: Listings) -> list[AgentView]:
    """Every agent; ``state`` is its latest attempt's (``unresponsive``: lease expired)."""
    now = time.time()
    return [_agent(row, now) for row in store.agent_rows()]


def _agent(row: AgentListing, now: float) -> AgentView:
    started = row.started_at
    state = _agent_state(row, now)
    return AgentView(
        name=row.name,
        task_id=row.task_id,
        task=row.task,
        state=state,
        attempt=row.attempt,
        worktree=row.worktree,
        session_id=row.session_id,
        worker=row.worker,
        host=row.host,
        pid=row.pid if state == "running" else None,
        runtime_seconds=round(_until(row, state, now) - started, 1) if started else None,
        last_activity_at=row.last_activity_at,
        cost_usd=row.cost_usd,
        tokens=row.tokens,
    )


def _until(row: AgentListing, state: str, now: float) -> float:
    """When its runtime ends: at its finish, at its last heartbeat once it is unresponsive
    (its worker stopped), else now."""
    if row.finished_at:
        return row.finished_at
    if state == "unresponsive":
        return row.heartbeat_at or row.started_at or now
    return now


def _agent_state(row: AgentListing, now: float) -> str:
    """running (lease live), unresponsive (lease expired), else what its task is waiting for."""
    if row.run_state == "running":
        lease = row.lease_expires_at or 0.0
        return "running" if lease >= now else "unresponsive"
    return str(row.task_state.value)


@dataclass(frozen=True)
class Reads:
    """What :func:`status` reads, for a reader that needs the same rows too (the web page):
    read once, passed to both."""

    tasks: list[TaskListing]
    pairs: list[tuple[int, int]]  # (task id, id of a task it depends on)
    pending: list[MessageListing]  # messages waiting for an answer

    @classmethod
    def of(cls, store: Listings) -> Reads:
        return cls(task_list(store), store.dependency_pairs(), store.message_rows(pending=True))


def status(store: Listings, reads: Reads | None = None) -> Status:
    """What ``cw status`` shows, from one snapshot of the district (``Store.listing`` or
    ``Glance``): reads in separate transactions could see an edge without its task."""
    reads = reads or Reads.of(store)
    tasks, pairs, pending = reads.tasks, reads.pairs, reads.pending
    by_id = {t.id: t for t in tasks}
    waits_on: dict[int, list[str]] = defaultdict(list)
    for task_id, dep_id in pairs:
        if by_id[dep_id].state != S.DONE:
            waits_on[task_id].append(by_id[dep_id].key)
    plans = _in_phase_order(_plans(tasks))
    return Status(
        counts=dict(Counter(t.state.value for t in tasks)),
        total=len(tasks),
        cost_usd=round(sum(t.cost_usd for t in tasks), 6),
        costs=_rolled_up(plans, lambda p: p.cost_usd),
        tokens=sum(t.tokens for t in tasks),
        token_counts=_rolled_up(plans, lambda p: p.tokens),
        budgets=store.budgets(),
        plans=plans,
        running=[a for a in agent_list(store) if a.state in ("running", "unresponsive")],
        blocked=[
            Blocked(by_id[i].key, by_id[i].state, keys)
            for i, keys in sorted(waits_on.items())
            if by_id[i].state in (S.PENDING, S.BLOCKED)
        ],
        attention=[
            Attention(t.key, t.state, t.last_error)
            for t in tasks
            if t.state in (S.FAILED, S.CONFLICT, S.WAITING, S.STOPPED)
        ],
        messages_pending=len(pending),
        no_changes=[t.key for t in tasks if t.no_changes],
        paused=store.pauses(),
        queued_since=min((t.state_changed_at for t in tasks if t.state == S.QUEUED), default=None),
    )


def _rolled_up(
    plans: list[PlanSummary], amount: Callable[[PlanSummary], N]
) -> dict[str, dict[str, N]]:
    """An amount (cost, tokens) rolled up: initiative, initiative/phase, initiative/phase/plan."""
    levels: dict[str, dict[str, Any]] = {"initiative": {}, "phase": {}, "plan": {}}
    for p in plans:
        for level, key in (
            ("initiative", p.initiative),
            ("phase", f"{p.initiative}/{p.phase}"),
            ("plan", f"{p.initiative}/{p.phase}/{p.plan}"),
        ):
            total = levels[level].get(key, 0) + amount(p)
            levels[level][key] = round(total, 6) if isinstance(total, float) else total
    return levels


def _plans(tasks: list[TaskListing]) -> list[PlanSummary]:
    """Each plan's tasks counted by state, whether one has run, and what they spent, in the
    order tasks come."""
    plans: dict[tuple[str, str, str], Counter[str]] = {}
    states = Counter((t.initiative, t.phase, t.plan, t.state.value) for t in tasks)
    for (initiative, phase, plan, state), count in states.items():
        plans.setdefault((initiative, phase, plan), Counter())[state] = count
    costs: dict[tuple[str, str, str], float] = defaultdict(float)
    tokens: Counter[tuple[str, str, str]] = Counter()
    started = {(t.initiative, t.phase, t.plan) for t in tasks if t.attempt > 0}
    for t in tasks:
        if t.cost_usd or t.tokens:
            costs[t.initiative, t.phase, t.plan] += t.cost_usd
            tokens[t.initiative, t.phase, t.plan] += t.tokens
    return [
        PlanSummary(
            initiative=initiative,
            phase=phase,
            plan=plan,
            done=counts.get(S.DONE, 0),
            total=sum(counts.values()),
            states=dict(counts),
            cost_usd=round(costs[initiative, phase, plan], 6),
            tokens=tokens[initiative, phase, plan],
            started=(initiative, phase, plan) in started,
        )
        for (initiative, phase, plan), counts in plans.items()
    ]


def _in_phase_order(plans: list[PlanSummary]) -> list[PlanSummary]:
    """Plans in the order their tasks come, but an initiative's numbered (GSD) phases in
    their numbers' order: a decimal phase added later (01.1) shows where it runs."""
    first: dict[str, int] = {}
    for p in plans:
        first.setdefault(p.initiative, len(first))
    numbered = {
        i for i in first if all(is_phase_number(p.phase) for p in plans if p.initiative == i)
    }
    unnumbered: tuple[int, str, tuple[int, ...]] = (0, "", ())

    def place(p: PlanSummary) -> tuple[int, tuple[int, str, tuple[int, ...]]]:
        return first[p.initiative], phase_order(p.phase) if p.initiative in numbered else unnumbered

    return sorted(plans, key=place)


#: What waits for a person, by task state, as ``cw wait`` names it.
FOR_A_PERSON = {
    S.FAILED: "failed",
    S.CONFLICT: "in conflict",
    S.WAITING: "waiting for an answer",
    S.REVIEW: "in review",
    S.STOPPED: "stopped",
}


@dataclass(frozen=True)
class Progress:
    """How far the district is. Nothing active: nothing moves until a person acts."""

    active: int
    done: int
    total: int
    for_a_person: dict[str, int]  # what waits for one, as FOR_A_PERSON names it: how many
    left: dict[str, int] = field(default_factory=dict)  # never to run: cancelled, blocked

    def line(self) -> str:
        """``22/30 tasks done; for you: 2 failed, 3 over budget (cw budget set); not to run:
        1 cancelled, 2 blocked``."""
        said = f"{self.done}/{self.total} tasks done"
        for label, parts in (("for you", self.for_a_person), ("not to run", self.left)):
            shown = ", ".join(f"{n} {what}" for what, n in parts.items())
            said += f"; {label}: {shown}" if shown else ""
        return said


def progress(store: Listings) -> Progress:
    """What moves, what is done, what waits for a person: a ready task whose budget is spent
    moves only once a person raises it."""
    counts = Counter(t.state for t in task_list(store))
    held = len(store.over_budget()) if counts[S.READY] else 0
    active = sum(counts[s] for s in (S.READY, S.QUEUED, S.RUNNING, S.MERGING)) - held
    waiting = {what: counts[state] for state, what in FOR_A_PERSON.items() if counts[state]}
    if held:
        waiting["ready but over budget (cw budget set)"] = held
    left = {state.value: counts[state] for state in (S.CANCELLED, S.BLOCKED) if counts[state]}
    return Progress(active, counts[S.DONE], sum(counts.values()), waiting, left)
