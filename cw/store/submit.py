"""Submitting a plan: storing its hierarchy and dependency edges, or applying a changed plan."""

from __future__ import annotations

import time
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, func, insert, or_, select, update
from sqlalchemy.orm import Session

from cw.errors import UsageError
from cw.plans.diff import (
    BAD,
    CHANGED,
    PlanChange,
    PlanDiff,
    Stored,
    StoredPlan,
    StoredTask,
    compare,
    merged_order,
    phase_order_of,
)
from cw.plans.prints import Prints, current, digest, prints, row_prints
from cw.store import db
from cw.store.models import Initiative, Phase, Plan, PlanVersion, Task, TaskDependency

if TYPE_CHECKING:
    from cw.plans.spec import InitiativeSpec, PhaseSpec, PlanSpec, TaskSpec
from cw.store.base import StoreBase, chunks, promotable
from cw.store.records import NEVER_RAN, NO_TERMS, S, Scope, Terms


class Submitting(StoreBase):
    """Submitting a plan: storing its hierarchy and dependency edges, or applying a changed plan."""

    def held(self, initiative: str) -> Stored | None:
        """What the district holds of ``initiative`` (None if it was never submitted), for
        :func:`cw.plans.diff.compare`: what a submit would change, changing nothing."""
        with self._read() as s:
            return _stored(s, initiative)

    def held_elsewhere(self, spec: InitiativeSpec) -> dict[tuple[int, str, str], int]:
        """For each other initiative (id, name, the path it was submitted from), how many of
        ``spec``'s plans it holds as they are (the same key, the same content): a project
        submitted again under a new name."""
        wanted = {plan.key: digest(plan) for plan in spec.plans()}
        rows = (
            select(Initiative.id, Initiative.name, Initiative.source, Plan.key, Plan.prints)
            .join(Phase, Phase.initiative_id == Initiative.id)
            .join(Plan, Plan.phase_id == Phase.id)
            .where(Initiative.name != spec.name)
        )
        found: dict[tuple[int, str, str], int] = {}
        with self._read() as s:
            for initiative_id, name, source, key, kept in s.execute(rows):
                if key in wanted and current(kept) and kept["all"] == wanted[key]:
                    which = (initiative_id, name, source)
                    found[which] = found.get(which, 0) + 1
        return found

    def submit(
        self,
        spec: InitiativeSpec,
        held: Stored | None = None,
        diff: PlanDiff | None = None,
        terms: Terms = NO_TERMS,
    ) -> PlanDiff:
        """Reconcile a validated plan with what the district holds, in one transaction: add
        what is new, update in place the changed plans none of whose tasks started, set the
        initiative's ``terms``. A refusal raises UsageError and stores nothing. ``held``:
        :meth:`held` read moments ago, used again if no submit changed the initiative since
        (its tasks' states are read anew); ``diff``: ``compare(spec, held)``, used again if no
        task's state changed either."""
        with self._write() as s:
            db.serialize(s, "submit")  # two submits at once: the second sees the first's rows
            stored = _still_held(s, held) or _stored(s, spec.name)
            if diff is None or stored is not held:
                diff = compare(spec, stored)
            diff.check()
            if not diff.nothing_new:
                now = time.time()
                if stored is None:
                    stored = self._new_initiative(s, spec, now)
                    diff.initiative_id = stored.initiative_id
                self._apply(s, spec, stored, diff, now)
                diff.revision = stored.revision + 1  # as _apply leaves it
            self._set_terms(s, spec.name, terms)
            return diff

    def _set_terms(self, s: Session, initiative: str, terms: Terms) -> None:
        scope = Scope(initiative=initiative)
        if terms.review is not None:
            self._set_review_mode(s, scope, terms.review)
        if terms.usd is not None or terms.tokens is not None:
            self._set_caps(s, scope, terms.usd, terms.tokens)

    def _new_initiative(self, s: Session, spec: InitiativeSpec, now: float) -> Stored:
        initiative = Initiative(
            name=spec.name, description=spec.description, source=spec.source, created_at=now
        )
        s.add(initiative)
        s.flush()
        self._event(s, "initiative.submitted", None, None, spec.name)
        return Stored(initiative.id, 0, {}, {}, {}, set())

    def _apply(
        self, s: Session, spec: InitiativeSpec, stored: Stored, diff: PlanDiff, now: float
    ) -> None:
        phases = _add_phases(s, spec, stored)
        plans = {plan.key: plan for plan in spec.plans()}
        plan_ids = {key: plan.id for key, plan in stored.plans.items()}
        waited = [
            w for c in diff.of(CHANGED) for w in _update_plan(s, plans[c.key], c, stored, now)
        ]
        for phase in spec.phases:
            plan_ids.update(_add_plans(s, phase, phases[phase.key], stored))
        keys = {key: task.id for key, task in stored.tasks.items()}
        keys.update(self._add_tasks(s, spec, stored, diff, plan_ids, now))
        _add_edges(s, diff, keys)
        waited += [keys[task] for task, _dep in diff.dropped_edges]  # it may wait on none now
        if len(stored.tasks):
            again = self._wait_again(s, stored, diff, keys)
            self._block_waiting_on_bad(s, spec, stored, diff, keys)
            touched = diff.new_tasks + [t.key for c in diff.of(CHANGED) for t in plans[c.key].tasks]
            touched += [task for task, _dep in diff.dropped_edges] + again
            self._promote_some(s, [keys[key] for key in touched] + self._unblock(s, waited))
        if stored.revision:  # stored before: readers that follow events render it all again
            self._event(s, "initiative.resubmitted", None, None, spec.name)
        s.execute(
            update(Initiative)
            .where(Initiative.id == stored.initiative_id)
            .values(revision=Initiative.revision + 1)
        )

    def _promote_some(self, s: Session, task_ids: list[int]) -> None:
        """:meth:`_promote` of these tasks only: new ones may wait only for done tasks."""
        db.serialize(s, "promote")
        for chunk in chunks(task_ids, 500):
            for task_id in s.scalars(promotable().where(Task.id.in_(chunk))).all():
                self._move(s, task_id, [S.PENDING], S.READY)

    def _add_tasks(
        self,
        s: Session,
        spec: InitiativeSpec,
        stored: Stored,
        diff: PlanDiff,
        plan_ids: dict[str, int],
        now: float,
    ) -> dict[str, int]:
        new = set(diff.new_tasks)
        added = [(plan, t) for plan in spec.plans() for t in plan.tasks if t.key in new]
        heights = _heights([t for _plan, t in added])
        first = s.scalar(
            select(func.max(Task.position)).where(Task.initiative_id == stored.initiative_id)
        )
        position = 0 if first is None else first + 1
        waiting = {task for task, _dep in diff.new_edges}
        rows = [
            {
                "initiative_id": stored.initiative_id,
                "plan_id": plan_ids[plan.key],
                "key": t.key,
                "height": heights[t.key],
                "position": position + i,
                "state": S.PENDING if t.key in waiting else S.READY,
                "state_changed_at": now,
                "created_at": now,
                **_task_values(t),
            }
            for i, (plan, t) in enumerate(added)
        ]
        keys: dict[str, int] = {}
        for chunk in chunks(rows, 1000):  # one INSERT ... RETURNING a chunk, no ORM objects
            keys.update(
                (key, i) for i, key in s.execute(insert(Task).returning(Task.id, Task.key), chunk)
            )
        return keys

    def _wait_again(
        self, s: Session, stored: Stored, diff: PlanDiff, keys: dict[str, int]
    ) -> list[str]:
        """Ready tasks that never started and now have a dependency go back to pending (they
        are ready again at once if it is done); the tasks moved."""
        ready = {t for t, _dep in diff.new_edges if t in stored.tasks}
        ready = {t for t in ready if stored.tasks[t].state == S.READY}
        return [t for t in sorted(ready) if self._move(s, keys[t], [S.READY], S.PENDING)]

    def _block_waiting_on_bad(
        self, s: Session, spec: InitiativeSpec, stored: Stored, diff: PlanDiff, keys: dict[str, int]
    ) -> None:
        """A task that now waits on a failed, cancelled or blocked task can never start."""
        bad = {k for k, t in stored.tasks.items() if t.state in BAD}
        deps: dict[str, list[str]] = {}
        for task, dep in diff.new_edges:
            deps.setdefault(task, []).append(dep)
        for key in _topological([t for t in spec.tasks() if t.key in deps]):
            if any(d in bad for d in deps.get(key, [])) and self._move(
                s, keys[key], [S.PENDING], S.BLOCKED
            ):
                bad.add(key)


def _stored(s: Session, name: str) -> Stored | None:
    """What the district holds of the initiative ``name`` (None if it was never submitted).
    Its reads run on the session's connection (SQLAlchemy Core): through the ORM, turning the
    rows into rows took half the read at 5,000 tasks and 24,000 edges."""
    c = s.connection()
    row = c.execute(select(Initiative.id, Initiative.revision).where(Initiative.name == name))
    initiative_id, revision = row.one_or_none() or (None, 0)
    if initiative_id is None:
        return None
    phases = c.execute(
        select(Phase.key, Phase.id)
        .where(Phase.initiative_id == initiative_id)
        .order_by(Phase.position, Phase.id)
    ).all()
    plans = c.execute(
        select(Plan.id, Plan.key, Phase.key, Plan.version, Plan.prints)
        .join(Phase, Phase.id == Plan.phase_id)
        .where(Phase.initiative_id == initiative_id)
        .order_by(Phase.position, Plan.position, Plan.id)
    ).all()
    plan_keys = {row[0]: row[1] for row in plans}
    rows = c.execute(
        select(Task.id, Task.key, Task.plan_id, Task.state, Task.attempt)
        .where(Task.initiative_id == initiative_id)
        .order_by(Task.position)
    ).all()
    tasks = {r.key: StoredTask(r.id, r.key, plan_keys[r.plan_id], r.state, r.attempt) for r in rows}
    edges = _stored_edges(s, initiative_id, tasks)
    stored = Stored(initiative_id, revision, {k: i for k, i in phases}, {}, tasks, edges)
    by_plan: dict[str, list[str]] = {}
    for task in tasks.values():
        by_plan.setdefault(task.plan_key, []).append(task.key)
    for plan_id, key, phase_key, version, kept in plans:
        held = kept if current(kept) else _row_prints(s, plan_id, stored.edges)
        keys = by_plan.get(key, [])
        stored.plans[key] = StoredPlan(plan_id, key, phase_key, version, held, keys, current(kept))
    return stored


def _still_held(s: Session, held: Stored | None) -> Stored | None:
    """``held`` with its tasks' states read anew, if no submit changed its initiative since it
    was read (only a submit adds or changes phases, plans, tasks and edges)."""
    if held is None:
        return None
    revision = s.scalar(select(Initiative.revision).where(Initiative.id == held.initiative_id))
    if revision != held.revision:
        return None
    states = select(Task.key, Task.state, Task.attempt).where(
        Task.initiative_id == held.initiative_id
    )
    rows = s.connection().execute(states).all()
    if {key for key, _state, _attempt in rows} != set(held.tasks):
        return None
    moved = {
        key: replace(held.tasks[key], state=state, attempt=attempt)
        for key, state, attempt in rows
        if (held.tasks[key].state, held.tasks[key].attempt) != (state, attempt)
    }  # most are as they were: then ``held`` itself
    return replace(held, tasks={**held.tasks, **moved}) if moved else held


def _stored_edges(
    s: Session, initiative_id: int, tasks: dict[str, StoredTask]
) -> set[tuple[str, str]]:
    keys = {task.id: task.key for task in tasks.values()}
    pairs = (
        select(TaskDependency.task_id, TaskDependency.depends_on_id)
        .join(Task, Task.id == TaskDependency.task_id)
        .where(Task.initiative_id == initiative_id)
    )
    rows = s.connection().execute(pairs).all()
    return {(keys[a], keys[b]) for a, b in rows}


def _plan_content(s: Session, plan_id: int, edges: set[tuple[str, str]]) -> dict[str, Any]:
    """A stored plan's content as rows: what :func:`row_prints` reads and a version keeps."""
    plan = s.get_one(Plan, plan_id)
    tasks = s.scalars(select(Task).where(Task.plan_id == plan_id).order_by(Task.position)).all()
    own = {t.key for t in tasks}
    return {
        "version": plan.version,
        "name": plan.name,
        "objective": plan.objective,
        "context": plan.context,
        "extra": plan.extra,
        "tasks": [
            {
                **{c: getattr(t, c) for c in ("key", "name", "kind", "prompt", "files", "verify")},
                **{"done_criteria": t.done_criteria, "extra": t.extra},
                "after": sorted(d for k, d in edges if k == t.key and d in own),
            }
            for t in tasks
        ],
    }


def _row_prints(s: Session, plan_id: int, edges: set[tuple[str, str]]) -> Prints:
    """The prints of a plan stored before plans had them, made from its rows."""
    content = _plan_content(s, plan_id, edges)
    return row_prints(content, content["tasks"])


def _add_phases(s: Session, spec: InitiativeSpec, stored: Stored) -> dict[str, int]:
    """The id of every phase of ``spec``, adding the new ones in GSD's order among the others."""
    phases = dict(stored.phases)
    new = [phase for phase in spec.phases if phase.key not in phases]
    for phase in new:
        row = Phase(
            initiative_id=stored.initiative_id,
            key=phase.key,
            name=phase.name,
            position=0,
            extra=phase.extra,
        )
        s.add(row)
        s.flush()
        phases[phase.key] = row.id
    if new:
        order = phase_order_of([p.key for p in spec.phases], list(stored.phases))
        _renumber(s, Phase, [phases[key] for key in order])
    return phases


def _add_plans(s: Session, phase: PhaseSpec, phase_id: int, stored: Stored) -> dict[str, int]:
    new = [plan for plan in phase.plans if plan.key not in stored.plans]
    ids: dict[str, int] = {}
    for plan in new:
        row = Plan(phase_id=phase_id, key=plan.key, position=0, **_plan_values(plan))
        s.add(row)
        s.flush()
        ids[plan.key] = row.id
    if new:
        held = [p.key for p in stored.plans.values() if p.phase_key == phase.key]
        order = merged_order([p.key for p in phase.plans], held)
        _renumber(s, Plan, [ids.get(key) or stored.plans[key].id for key in order])
    return ids


def _renumber(s: Session, model: type[Phase] | type[Plan], ids: list[int]) -> None:
    for position, row_id in enumerate(ids):
        s.execute(update(model).where(model.id == row_id).values(position=position))


def _update_plan(
    s: Session, plan: PlanSpec, change: PlanChange, stored: Stored, now: float
) -> list[int]:
    """Keep the plan's content as its previous version; update the plan and the tasks the
    files changed (``change``: what the comparison found). The tasks that waited on a task it
    dropped (blocked, if that one was cancelled)."""
    held = stored.plans[plan.key]
    # Lock its tasks: a claim waits for this update, and one made just before is seen here.
    rows = s.execute(
        select(Task.state, Task.attempt).where(Task.plan_id == held.id).with_for_update()
    ).all()
    if any(state not in NEVER_RAN or attempt > 0 for state, attempt in rows):
        raise UsageError(f"plan {plan.key}: a task of it started just now; nothing stored")
    content = _plan_content(s, held.id, stored.edges)
    s.add(PlanVersion(plan_id=held.id, version=held.version, content=content, replaced_at=now))
    values = {**_plan_values(plan), "version": held.version + 1}
    s.execute(update(Plan).where(Plan.id == held.id).values(**values))
    on_disk = {t.key for t in plan.tasks}
    gone = [stored.tasks[k].id for k in held.tasks if k not in on_disk]
    waited: list[int] = []
    if gone:
        waiting = select(TaskDependency.task_id).where(TaskDependency.depends_on_id.in_(gone))
        waited = [t for t in s.scalars(waiting) if t not in gone]
        edges = or_(TaskDependency.task_id.in_(gone), TaskDependency.depends_on_id.in_(gone))
        s.execute(delete(TaskDependency).where(edges))
        s.execute(delete(Task).where(Task.id.in_(gone)))
    edited = set(change.changes.edited if change.changes else [])
    for task in plan.tasks:
        # A task the files did not change keeps its row as it is: a person's edit of its
        # prompt or priority (the file UI) stands.
        if task.key in edited:
            task_id = stored.tasks[task.key].id
            s.execute(update(Task).where(Task.id == task_id).values(**_task_values(task)))
    return waited


def _plan_values(plan: PlanSpec) -> dict[str, Any]:
    return {
        "name": plan.name,
        "objective": plan.objective,
        "context": plan.context,
        "extra": plan.extra,
        "prints": prints(plan),
    }


def _add_edges(s: Session, diff: PlanDiff, keys: dict[str, int]) -> None:
    if diff.dropped_edges:
        for task, dep in diff.dropped_edges:
            s.execute(
                delete(TaskDependency).where(
                    TaskDependency.task_id == keys[task], TaskDependency.depends_on_id == keys[dep]
                )
            )
    edges = [{"task_id": keys[t], "depends_on_id": keys[d]} for t, d in diff.new_edges]
    if edges:
        s.execute(insert(TaskDependency), edges)


def _heights(tasks: list[TaskSpec]) -> dict[str, int]:
    """For each task, the number of tasks on the longest chain from it to a sink (among
    ``tasks``: those a submit adds)."""
    dependents: dict[str, list[str]] = {t.key: [] for t in tasks}
    for t in tasks:
        for d in t.depends_on:
            if d in dependents:  # else a stored task
                dependents[d].append(t.key)
    heights: dict[str, int] = {}
    for key in reversed(_topological(tasks)):
        heights[key] = 1 + max((heights[d] for d in dependents[key]), default=0)
    return heights


def _topological(tasks: list[TaskSpec]) -> list[str]:
    """Task keys, every task after its dependencies (the plan is validated: no cycles)."""
    order: list[str] = []
    seen: set[str] = set()
    deps = {t.key: t.depends_on for t in tasks}
    for root in deps:
        stack = [(root, iter(deps[root]))]
        if root in seen:
            continue
        seen.add(root)
        while stack:
            key, children = stack[-1]
            # A dependency outside ``tasks`` is a stored task: it is not ordered here.
            child = next((c for c in children if c not in seen and c in deps), None)
            if child is None:
                order.append(key)
                stack.pop()
            else:
                seen.add(child)
                stack.append((child, iter(deps[child])))
    return order


def _task_values(spec: TaskSpec) -> dict[str, Any]:
    """The columns a task's plan decides (and a plan updated in place changes)."""
    extra = dict(spec.extra)
    priority = extra.get("priority", 0)
    if isinstance(priority, float) and priority.is_integer():  # 1.0 is an integer to JSON
        priority = int(priority)
    return {
        "name": spec.name,
        "kind": spec.kind,
        "prompt": spec.prompt,
        "files": list(spec.files),
        "verify": spec.verify,
        "done_criteria": spec.done,
        "priority": priority if isinstance(priority, int) else 0,
        "extra": extra,
    }
