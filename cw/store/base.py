"""The store's core: sessions, the compare-and-set state move and the event log, and the
few steps every concern shares (promoting, blocking dependents, claiming, adding messages).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, Self, TypeVar

from sqlalchemy import Connection, Engine, Select, bindparam, func, select, text, update
from sqlalchemy.orm import Session, aliased, sessionmaker

from cw.defaults import MAX_ROW_ID, SCOPE_REVIEW_MODES
from cw.errors import NotFound, UsageError
from cw.states import TaskState, check_transition
from cw.store import db, names, selects
from cw.store.models import (
    Agent,
    AgentRun,
    Base,
    Event,
    Initiative,
    Merge,
    Message,
    Phase,
    Plan,
    Task,
    TaskDependency,
)
from cw.store.records import DECISION, Claim, S, Scope

T = TypeVar("T")
R = TypeVar("R", bound=Base)


class StoreBase:
    """Sessions, state moves and the steps every part of :class:`~cw.store.Store` shares."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._sessions = sessionmaker(engine, expire_on_commit=False)
        self._readonly = sessionmaker(db.reading(engine), expire_on_commit=False)
        self._broker_marked = False

    @classmethod
    def open(cls, url: str) -> Self:
        engine = db.make_engine(url)
        db.migrate(engine)
        return cls(engine)

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def _write(self) -> Iterator[Session]:
        with self._sessions.begin() as session:
            yield session

    @contextmanager
    def _read(self) -> Iterator[Session]:
        with self._readonly.begin() as session:
            yield session

    @contextmanager
    def listing(self) -> Iterator[selects.Listings]:
        """The listings' reads in one read transaction: one snapshot of the district (each of
        the store's own listing methods reads in a transaction of its own)."""
        with self._read() as s:
            yield selects.Reading(selecting(s))

    def _select(self, sql: str, params: Mapping[str, object]) -> Sequence[Sequence[Any]]:
        """One of :mod:`cw.store.selects`' reads, in a read transaction of its own."""
        with self._read() as s:
            return selecting(s)(sql, params)

    def _move(
        self,
        s: Session,
        task_id: int,
        old: Iterable[TaskState],
        new: TaskState,
        *,
        of_attempt: int | None = None,
        **values: Any,
    ) -> bool:
        """Compare-and-set one task's state; write the event. False if someone moved it first."""
        old = tuple(old)
        for state in old:
            check_transition(state, new)
        now = time.time()
        stmt = update(Task).where(Task.id == task_id, Task.state.in_(old))
        if of_attempt is not None:
            stmt = stmt.where(Task.attempt == of_attempt)
        result = s.execute(stmt.values(state=new, state_changed_at=now, **values))
        if result.rowcount != 1:  # type: ignore[attr-defined]
            return False
        attempt = values["attempt"] if isinstance(values.get("attempt"), int) else of_attempt
        self._event(s, f"task.{new.value}", task_id, attempt, values.get("last_error"))
        return True

    def _set_review_mode(self, s: Session, scope: Scope, mode: str) -> None:
        """A plan's or an initiative's own review mode (``inherit``: the one above it)."""
        if mode not in SCOPE_REVIEW_MODES:
            modes = ", ".join(SCOPE_REVIEW_MODES)
            raise UsageError(f"review mode {mode!r}: expected one of {modes}")
        self._set_on_scope(s, scope, "review.mode", review=None if mode == "inherit" else mode)

    def _set_caps(self, s: Session, scope: Scope, usd: float | None, tokens: int | None) -> None:
        """A scope's budget caps; one not given stays as it was."""
        caps = {"budget_usd": usd, "budget_tokens": tokens}
        self._set_on_scope(
            s, scope, "budget.set", **{k: v for k, v in caps.items() if v is not None}
        )

    def _set_on_scope(self, s: Session, scope: Scope, kind: str, **values: Any) -> None:
        """Set columns of the plan or initiative ``scope`` names (NotFound if none), with an
        event ``kind`` saying what was set."""
        named = scope.name
        if scope.plan:  # by id or key, as `cw plan show` finds it: one plan, never several
            found = one_found(matching_ids(s, Plan, scope.plan), "plan", scope.plan)
            result = s.execute(update(Plan).where(Plan.id == found).values(**values))
            named = f"plan {s.get_one(Plan, found).key} (id {found})"
        else:
            where = Initiative.name == scope.name
            result = s.execute(update(Initiative).where(where).values(**values))
        if result.rowcount == 0:  # type: ignore[attr-defined]
            raise NotFound(f"no {scope.describe()}: see `cw plan list`")
        said = ", ".join(f"{name} {value}" for name, value in values.items())
        self._event(s, kind, None, None, f"{named}: {said}")

    @staticmethod
    def _event(
        s: Session, kind: str, task_id: int | None, attempt: int | None, note: Any = None
    ) -> None:
        data = {"note": note} if note else {}
        s.add(Event(at=time.time(), kind=kind, task_id=task_id, attempt=attempt, data=data))

    def _promote(self, s: Session, after: int | None = None) -> list[int]:
        """pending -> ready where every dependency is done; ``after``: only its dependents."""
        # Two dependencies of one task finishing at once must not both miss the other's done.
        db.serialize(s, "promote")
        stmt = promotable()
        if after is not None:
            stmt = stmt.where(Task.id.in_(dependents_of().params(after=after)))
        ids = s.scalars(stmt).all()
        return [i for i in ids if self._move(s, i, [S.PENDING], S.READY)]

    def _unblock(self, s: Session, task_ids: list[int]) -> list[int]:
        """blocked -> pending for these tasks, and downstream, where no bad dependency is left
        (what blocked them was retried, or a changed plan dropped it or the edge to it); the
        ones moved."""
        db.serialize(s, "promote")  # a dependency failing meanwhile blocks what this frees
        moved: list[int] = []

        def move(task_id: int) -> bool:
            if has_bad_dependency(s, task_id) or not self._move(s, task_id, [S.BLOCKED], S.PENDING):
                return False
            moved.append(task_id)
            return True

        for task_id in task_ids:
            if move(task_id):
                walk_dependents(s, task_id, move)
        return moved

    def _block_dependents(self, s: Session, task_id: int) -> None:
        """pending -> blocked for every task downstream of one that cannot finish."""
        db.serialize(s, "promote")  # after an unblocking that saw this one still able to
        walk_dependents(s, task_id, lambda d: self._move(s, d, [S.PENDING], S.BLOCKED))

    def _claim(self, s: Session, task_id: int) -> Claim | None:
        # A new attempt: a stop asked of an earlier one is over (it stopped, or finished).
        if not self._move(
            s, task_id, [S.READY], S.QUEUED, attempt=Task.attempt + 1, stop_requested_at=None
        ):
            return None
        self._ensure_agent(s, task_id)
        return labelled(s, task_id)

    def _ensure_agent(self, s: Session, task_id: int) -> None:
        if s.scalar(select(Agent.id).where(Agent.task_id == task_id)) is not None:
            return
        count = s.scalar(select(func.count(Agent.id))) or 0
        s.add(
            Agent(
                name=names.agent_name(count),
                task_id=task_id,
                adapter="",
                created_at=time.time(),
            )
        )

    def _add_message(self, s: Session, message: Message) -> None:
        s.add(message)
        s.flush()
        self._message_event(s, "message.created", message)

    @staticmethod
    def _message_event(s: Session, kind: str, message: Message, attempt: int | None = None) -> None:
        s.add(
            Event(
                at=time.time(),
                kind=kind,
                task_id=message.task_id,
                attempt=attempt,
                data={"message_id": message.id},
            )
        )

    @staticmethod
    def _lost_before(s: Session, claim: Claim) -> tuple[str, int | None] | None:
        """The previous attempt's (host, agent pid) when it was lost: its agent may live on."""
        run = s.scalar(
            select(AgentRun).where(
                AgentRun.task_id == claim.task_id,
                AgentRun.attempt == claim.attempt - 1,
                AgentRun.state == "lost",
            )
        )
        return (run.host, run.pid) if run is not None else None


def named_row(s: Session, model: type[R], row_id: int, **options: Any) -> R:
    """The row a person named by id: NotFound (one line, exit 2; a 404 on the page) if there
    is none, where ``Session.get_one`` raises SQLAlchemy's own error."""
    row = s.get(model, row_id, **options)
    if row is None:
        what = model.__name__.lower()
        raise NotFound(f"no {what} {row_id}: see `cw {what} list`")
    return row


def lock_task(s: Session, task_id: int) -> Task | None:
    """The task, its row locked until the transaction ends (a no-op lock on SQLite)."""
    return s.get(Task, task_id, with_for_update=True, populate_existing=True)


#: What makes a reference name a row by its id alone (``id:12``): keys cannot hold a colon.
BY_ID = "id:"


def matching_ids(s: Session, model: type[Task] | type[Plan], ref: str) -> list[int]:
    """The rows ``ref`` names: ``id:12`` the row of id 12; ``12`` the same, unless another
    row's key is "12" (refused: say which); anything else every row with that key."""
    number = ref.removeprefix(BY_ID)
    as_id = number.isascii() and number.isdigit() and int(number) <= MAX_ROW_ID
    if ref.startswith(BY_ID):
        return [int(number)] if as_id and s.get(model, int(number)) is not None else []
    keyed = list(s.scalars(select(model.id).where(model.key == ref)))
    if not (as_id and s.get(model, int(ref)) is not None):
        return keyed
    others = [i for i in keyed if i != int(ref)]
    if others:
        what = model.__tablename__.rstrip("s")
        keyed_ids = ", ".join(f"{BY_ID}{i}" for i in others)
        raise UsageError(
            f"{what} {ref!r} is the id of one {what} and the key of another ({keyed_ids}): "
            f"say {BY_ID}{ref} for the first"
        )
    return [int(ref)]


def one_found(ids: Sequence[int], what: str, ref: str) -> int:
    """The one id of ``ids``; NotFound, saying why, for none or several."""
    if not ids:
        raise NotFound(f"no {what} {ref!r}: see `cw {what} list`")
    if len(ids) > 1:
        raise NotFound(f"{what} key {ref!r} is in several initiatives; use its id: {list(ids)}")
    return ids[0]


def queue_merge(s: Session, task_id: int, attempt: int) -> None:
    """The attempt's merge, waiting for a merge worker: what recovery and ``cw merge status``
    see of a merge whose message is on its way (or lost)."""
    branch = s.scalar(select(Task.branch).where(Task.id == task_id)) or ""
    now = time.time()
    s.add(Merge(task_id=task_id, attempt=attempt, state="queued", branch=branch, queued_at=now))


def agents_in_flight(s: Session) -> int:
    """Agent tasks claimed or running: each holds, or is about to hold, an agent process."""
    return (
        s.scalar(
            select(func.count(Task.id)).where(
                Task.state.in_([S.QUEUED, S.RUNNING]), ~Task.kind.startswith("checkpoint")
            )
        )
        or 0
    )


#: What a :class:`Claim` reads of a task and its agent (outer-joined: it may have none yet).
CLAIM_COLUMNS = (Task.id, Task.attempt, Task.key, Agent.name, Task.priority, Task.height)


def claim_of(row: Sequence[Any]) -> Claim:
    """A claim from a row of :data:`CLAIM_COLUMNS`."""
    task_id, attempt, key, agent, priority, height = row
    return Claim(task_id, attempt, key, agent or "", priority, height)


def labelled(s: Session, task_id: int) -> Claim:
    """The task's current attempt, with its key and its agent's name."""
    return claim_of(
        s.execute(
            select(*CLAIM_COLUMNS)
            .outerjoin(Agent, Agent.task_id == Task.id)
            .where(Task.id == task_id)
        ).one()
    )


@functools.cache
def promotable() -> Select[Any]:
    """Pending tasks none of whose dependencies is unfinished (built once: aliasing is slow)."""
    dep = aliased(Task)
    unmerged = (
        select(TaskDependency.task_id)
        .join(dep, dep.id == TaskDependency.depends_on_id)
        .where(dep.state != S.DONE)
    )
    return select(Task.id).where(Task.state == S.PENDING, Task.id.not_in(unmerged))


@functools.cache
def dependents_of() -> Select[Any]:
    return select(TaskDependency.task_id).where(TaskDependency.depends_on_id == bindparam("after"))


def walk_dependents(s: Session, task_id: int, move: Callable[[int], bool]) -> None:
    """Visit the tasks downstream of ``task_id``, level by level: ``move`` is called on each
    direct dependent, and only those it moved (returned True) pass the walk on to theirs."""
    frontier = [task_id]
    while frontier:
        dependents = s.scalars(
            select(TaskDependency.task_id).where(TaskDependency.depends_on_id.in_(frontier))
        ).all()
        frontier = [d for d in dependents if move(d)]


def direct_dependents(s: Session, task_id: int) -> list[int]:
    """The tasks that wait on ``task_id`` itself."""
    return list(
        s.scalars(select(TaskDependency.task_id).where(TaskDependency.depends_on_id == task_id))
    )


def has_bad_dependency(s: Session, task_id: int) -> bool:
    dep = aliased(Task)
    bad = s.scalar(
        select(func.count())
        .select_from(TaskDependency)
        .join(dep, dep.id == TaskDependency.depends_on_id)
        .where(
            TaskDependency.task_id == task_id,
            dep.state.in_([S.FAILED, S.CANCELLED, S.BLOCKED, S.CONFLICT]),
        )
    )
    return bool(bad)


def chunks(items: list[T], size: int) -> Iterator[list[T]]:
    """``items`` in lists of ``size`` (the last one shorter)."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


def keys_not_done(s: Session, task_id: int) -> list[str]:
    dep = aliased(Task)
    return list(
        s.scalars(
            select(dep.key)
            .join(TaskDependency, TaskDependency.depends_on_id == dep.id)
            .where(TaskDependency.task_id == task_id, dep.state != S.DONE)
        )
    )


def selecting(s: Session | Connection) -> selects.Select:
    """:mod:`cw.store.selects`' reads inside the transaction ``s`` is in."""
    return lambda sql, params: s.execute(text(sql), params).all()


def decisions_upstream(s: Session, task_id: int) -> list[str]:
    """What a person picked at each decision checkpoint the task depends on, however far up
    (the walk up the graph only where some decision was made at all)."""
    decided = (Task.kind == DECISION) & (Task.state == S.DONE)
    if s.scalar(select(Task.id).where(decided).limit(1)) is None:
        return []
    upstream = (
        select(TaskDependency.depends_on_id.label("id"))
        .where(TaskDependency.task_id == task_id)
        .cte("upstream", recursive=True)
    )
    upstream = upstream.union(
        select(TaskDependency.depends_on_id).join(upstream, TaskDependency.task_id == upstream.c.id)
    )
    rows = s.execute(
        select(Task.name, Task.extra)
        .where(Task.id.in_(select(upstream.c.id)), decided)
        .order_by(Task.position)
    ).all()
    return [f"{name}: {extra['answer']}" for name, extra in rows if extra.get("answer")]


def over_budget_plans(s: Session) -> list[int]:
    """Plans where no new work may start: their budget, or their initiative's, is spent."""
    rows = selects.budgets(selecting(s))
    plans = {r.id for r in rows if r.kind == "plan" and r.exhausted}
    spent_initiatives = [r.id for r in rows if r.kind == "initiative" and r.exhausted]
    if spent_initiatives:
        plans.update(
            s.scalars(
                select(Plan.id)
                .join(Phase, Phase.id == Plan.phase_id)
                .where(Phase.initiative_id.in_(spent_initiatives))
            )
        )
    return sorted(plans)
