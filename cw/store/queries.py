"""Reading: the rows ``cw status``, ``cw task`` and ``cw agent`` show, plans, events."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

from sqlalchemy import case, func, select, text
from sqlalchemy.orm import Session

from cw.plans import spec as planspec
from cw.plans.diff import rollup
from cw.store import models
from cw.store.base import StoreBase, matching_ids, named_row, one_found
from cw.store.models import (
    NO_CHANGES,
    Event,
    Initiative,
    Merge,
    Phase,
    Plan,
    PlanVersion,
    Task,
    TaskDependency,
    columns,
)
from cw.store.read import (
    AttemptRecord,
    EventRow,
    MergeRecord,
    MergeRow,
    MessageRecord,
    PlanDetail,
    PlanListing,
    PlanTask,
    ReplacedVersion,
    TaskDetail,
    TaskFootprint,
)
from cw.store.records import S

Owned = TypeVar("Owned", models.AgentRun, Merge, models.Message)

#: What :class:`TaskFootprint` reads of a task.
FOOTPRINT = "id key kind state state_changed_at branch worktree base_sha head_sha merged_sha"


class Queries(StoreBase):
    """Reading: the rows ``cw status``, ``cw task`` and ``cw agent`` show, plans, events."""

    def plan_rows(self, plan_id: int | None = None) -> list[PlanListing]:
        """Every plan (or one) with its phase, version, where it came from and its tasks'
        states rolled up, in initiative, phase and plan order."""
        stmt = (
            select(Plan, Phase.key, Phase.name, Initiative.name, Initiative.source)
            .join(Phase, Phase.id == Plan.phase_id)
            .join(Initiative, Initiative.id == Phase.initiative_id)
            .order_by(Initiative.id, Phase.position, Plan.position)
        )
        ran = func.sum(case((Task.attempt > 0, 1), else_=0))
        counts = select(Task.plan_id, Task.state, func.count(), ran).group_by(
            Task.plan_id, Task.state
        )
        if plan_id is not None:
            stmt, counts = stmt.where(Plan.id == plan_id), counts.where(Task.plan_id == plan_id)
        with self._read() as s:
            states: dict[int, dict[str, int]] = {}
            started: set[int] = set()
            for pid, state, n, attempted in s.execute(counts).all():
                states.setdefault(pid, {})[state.value] = n
                if attempted:
                    started.add(pid)
            return [
                _plan_row(
                    plan,
                    (phase, phase_name, initiative, source),
                    states.get(plan.id, {}),
                    plan.id in started,
                )
                for plan, phase, phase_name, initiative, source in s.execute(stmt).all()
            ]

    def plan_detail(self, plan_id: int) -> PlanDetail:
        """A plan's row, its tasks and the versions a submit replaced."""
        (row,) = self.plan_rows(plan_id)
        with self._read() as s:
            plan = named_row(s, Plan, plan_id)
            tasks = select(Task.id, Task.key, Task.name, Task.state).where(Task.plan_id == plan_id)
            versions = select(PlanVersion).where(PlanVersion.plan_id == plan_id)
            return PlanDetail(
                **row,
                objective=plan.objective,
                task_rows=[
                    PlanTask(i, k, n, st.value)
                    for i, k, n, st in s.execute(tasks.order_by(Task.position)).all()
                ],
                versions=[
                    _version_row(v) for v in s.scalars(versions.order_by(PlanVersion.version))
                ],
            )

    def find_plan_id(self, ref: str) -> int:
        """A plan by id (``3``) or key (``02-01``); NotFound / ambiguous as a clear error."""
        return self._find(Plan, ref)

    def workspaces(self) -> list[TaskFootprint]:
        """Every task's git footprint: key, kind, state, branch, worktree, base/head/merged sha."""
        with self._read() as s:
            rows = s.execute(select(*columns(Task, FOOTPRINT)).order_by(Task.id)).all()
            return [TaskFootprint(**r._mapping) for r in rows]

    def merge_rows(self) -> list[MergeRow]:
        """Every merge attempt, newest first, with its task's key and state."""
        with self._read() as s:
            rows = s.execute(
                select(Merge, Task.key, Task.state)
                .join(Task, Task.id == Merge.task_id)
                .order_by(Merge.id.desc())
            ).all()
            return [
                MergeRow(**_columns(merge), task=key, task_state=state)
                for merge, key, state in rows
            ]

    def find_task_id(self, ref: str) -> int:
        """A task by id (``12``) or key (``02-03-1``); NotFound / ambiguous as a clear error."""
        return self._find(Task, ref)

    def _find(self, model: type[Task] | type[Plan], ref: str) -> int:
        with self._read() as s:
            ids = matching_ids(s, model, ref)
        return one_found(ids, model.__tablename__.rstrip("s"), ref)

    def task_detail(self, task_id: int) -> TaskDetail:
        """A task with every column, its plan, dependencies, agent, attempts, merges and
        messages."""
        with self._read() as s:
            task = named_row(s, Task, task_id)
            agent = s.scalar(select(models.Agent).where(models.Agent.task_id == task_id))
            return TaskDetail(
                **_columns(task),
                plan=task.plan.key,
                no_changes=bool(s.scalar(select(NO_CHANGES).where(Task.id == task_id))),
                depends_on=_keys(s, TaskDependency.depends_on_id, TaskDependency.task_id, task_id),
                dependents=_keys(s, TaskDependency.task_id, TaskDependency.depends_on_id, task_id),
                agent=agent.name if agent else None,
                session_id=agent.session_id if agent else None,
                runs=[AttemptRecord(**_columns(r)) for r in _of_task(s, models.AgentRun, task_id)],
                merges=[MergeRecord(**_columns(r)) for r in _of_task(s, Merge, task_id)],
                messages=[
                    MessageRecord(**_columns(r)) for r in _of_task(s, models.Message, task_id)
                ],
                verify_treatment=planspec.verify_treatment(
                    (task.extra or {}).get("verify_mode"), task.verify
                ),
            )

    def events(self, task_id: int | None = None) -> list[EventRow]:
        """The event log (or one task's), oldest first."""
        stmt = select(Event).order_by(Event.id)
        if task_id is not None:
            stmt = stmt.where(Event.task_id == task_id)
        with self._read() as s:
            return [EventRow(**_columns(event)) for event in s.scalars(stmt)]

    def ping(self) -> None:
        with self._read() as s:
            s.execute(text("SELECT 1"))


def _plan_row(
    plan: Plan, place: tuple[str, str, str, str], states: dict[str, int], started: bool
) -> PlanListing:
    phase, phase_name, initiative, source = place
    return PlanListing(
        id=plan.id,
        initiative=initiative,
        phase=phase,
        phase_name=phase_name,
        plan=plan.key,
        name=plan.name,
        version=plan.version,
        source=str(plan.extra.get("plan_file") or source),
        tasks=sum(states.values()),
        done=states.get(S.DONE.value, 0),
        states=states,
        started=started,
        state=rollup(list(states), started),
    )


def _version_row(version: PlanVersion) -> ReplacedVersion:
    content = version.content
    return ReplacedVersion(
        version=version.version,
        replaced_at=version.replaced_at,
        source=str(content.get("extra", {}).get("plan_file", "")),
        tasks=[task["key"] for task in content.get("tasks", [])],
        content=content,
    )


def _keys(s: Session, want: Any, where: Any, task_id: int) -> list[str]:
    ids = select(want).where(where == task_id)
    return list(s.scalars(select(Task.key).where(Task.id.in_(ids)).order_by(Task.position)))


def _of_task(s: Session, model: type[Owned], task_id: int) -> Sequence[Owned]:
    """The rows of ``model`` (attempts, merges, messages) that belong to one task."""
    return s.scalars(select(model).where(model.task_id == task_id)).all()


def _columns(row: models.Base) -> dict[str, Any]:
    """An ORM row's columns by name, as a record's fields."""
    return {c.name: getattr(row, c.name) for c in row.__table__.columns}
