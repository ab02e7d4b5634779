"""All database access, behind one object with intent-named methods.

Every task state change is a compare-and-set (``UPDATE ... WHERE state IN (...) AND attempt = ?``)
made by :meth:`Store._move`, which also writes the event log. Nothing outside this module
builds a query.
"""

from __future__ import annotations

import functools
import time
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    Engine,
    Select,
    bindparam,
    delete,
    func,
    insert,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.orm import Session, aliased, sessionmaker

from cw import answers, db, names
from cw.defaults import SESSION_NAMESPACE
from cw.errors import LeaseHeld, NotFound, UsageError
from cw.models import (
    NO_CHANGES,
    Agent,
    AgentRun,
    District,
    Event,
    Initiative,
    Merge,
    Message,
    Phase,
    Plan,
    PlanVersion,
    Task,
    TaskDependency,
)
from cw.plandiff import (
    BAD,
    CHANGED,
    PlanDiff,
    Prints,
    Stored,
    StoredPlan,
    StoredTask,
    compare,
    current,
    merged_order,
    phase_order_of,
    prints,
    rollup,
    row_prints,
)
from cw.states import TaskState, check_transition

if TYPE_CHECKING:
    from cw.planspec import InitiativeSpec, PhaseSpec, PlanSpec, TaskSpec

S = TaskState
DECISION = "checkpoint:decision"
HUMAN_ACTION = "checkpoint:human-action"
#: States of a task nobody has claimed yet: it can still be edited.
UNSTARTED = (S.PENDING, S.READY, S.BLOCKED)


@dataclass(frozen=True)
class Claim:
    task_id: int
    attempt: int


@dataclass(frozen=True)
class Workspace:
    """Everything a worker needs to run one attempt: plain values, never ORM rows."""

    task_id: int
    key: str
    name: str
    prompt: str
    files: list[str]
    verify: str | None
    done_criteria: str | None
    plan_objective: str
    plan_context: str
    attempt: int
    agent_id: int
    agent_name: str
    session_id: str | None
    branch: str | None
    worktree: str | None
    base_sha: str | None
    session_cost_usd: float = 0.0  # what the agent's current session has cost so far
    bounce: dict[str, Any] = field(default_factory=dict)  # why the work was sent back
    check: str | None = None  # a GSD task's whole <verify> text (``verify`` is only its gate)
    previous: tuple[str, int | None] | None = None  # (host, agent pid) of a run taken over
    answers: list[dict[str, Any]] = field(default_factory=list)  # answered questions to hear
    # A conversation not yet recorded as started (session_id None) starts with this id; known:
    # an earlier run of this task launched it, so an "already in use" CLI may resume it.
    new_session_id: str | None = None
    new_session_known: bool = False


@dataclass(frozen=True)
class MergeJob:
    task_id: int
    attempt: int
    key: str
    name: str
    branch: str
    worktree: str | None
    verify: str | None = None
    base_sha: str | None = None


@dataclass(frozen=True)
class MergeReport:
    """What one merge found."""

    sha: str | None = None  # the new integration sha, when merged
    conflict_files: list[str] = field(default_factory=list)
    output: str = ""
    rejected: bool = False  # merged cleanly but the verify step was red
    verify_command: str | None = None
    verify_exit_code: int | None = None
    verify_output: str | None = None


@dataclass
class AttemptResult:
    """What came of one attempt, as the worker saw it."""

    outcome: str  # done | questions | failed | stopped
    exit_code: int | None = None
    session_id: str | None = None
    cost_usd: float | None = None
    turns: int | None = None
    usage: dict[str, Any] = field(default_factory=dict)
    duration_ms: int | None = None
    summary: str | None = None
    error: str | None = None
    head_sha: str | None = None
    stdout_path: str | None = None
    stderr_path: str | None = None
    questions: list[dict[str, Any]] = field(default_factory=list)
    exited_at: float | None = None  # when the agent process ended
    not_before: float | None = None  # rate_limited: the task waits until then (a usage limit)

    @property
    def ok(self) -> bool:
        return self.outcome == "done"


#: What an agent that asks without saying what is asked about gets: a question to answer.
NO_QUESTION: dict[str, Any] = {
    "id": "",
    "text": "The agent stopped to ask a person something but gave no question; see its log "
    "(`cw agent logs`) and answer here.",
}

#: ``tasks.extra`` key: how many times cw's own machinery failed this task's attempts since a
#: person last retried it (:meth:`Store.retry_machinery`).
MACHINERY_RETRIES = "machinery_retries"
#: Run states of attempts that ended without a result of their own: a previous attempt's
#: finished agent still stands after them (:meth:`Store.finished_agent`).
NO_RESULT = ("lost", "retried")
#: Run states of an attempt that finished its conversation: the answers it got were heard.
HEARD_BY = ("succeeded", "asked")

#: Where an attempt's outcome takes its task, and what its run is then called.
OUTCOMES: dict[str, tuple[TaskState, str]] = {
    "done": (TaskState.MERGING, "succeeded"),
    "failed": (TaskState.FAILED, "failed"),
    "questions": (TaskState.WAITING, "asked"),
    "stopped": (TaskState.STOPPED, "stopped"),
    "interrupted": (TaskState.READY, "interrupted"),  # the worker shut down
    "rate_limited": (TaskState.READY, "rate_limited"),  # parked until the limit resets
}


class Store:
    """The district's database. Create one per process with :meth:`open`."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._sessions = sessionmaker(engine, expire_on_commit=False)
        self._readonly = sessionmaker(
            engine.execution_options(cw_readonly=True), expire_on_commit=False
        )
        self._broker_marked = False

    @classmethod
    def open(cls, url: str) -> Store:
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

    # -- state changes -------------------------------------------------------------------

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

    @staticmethod
    def _event(
        s: Session, kind: str, task_id: int | None, attempt: int | None, note: Any = None
    ) -> None:
        data = {"note": note} if note else {}
        s.add(Event(at=time.time(), kind=kind, task_id=task_id, attempt=attempt, data=data))

    # -- submit ---------------------------------------------------------------------------

    def held(self, initiative: str) -> Stored | None:
        """What the district holds of ``initiative`` (None if it was never submitted), for
        :func:`cw.plandiff.compare`: what a submit would change, changing nothing."""
        with self._read() as s:
            return _stored(s, initiative)

    def submit(self, spec: InitiativeSpec, held: Stored | None = None) -> PlanDiff:
        """Reconcile a validated plan with what the district holds, in one transaction: add
        what is new, update in place the changed plans none of whose tasks started. A refusal
        raises UsageError and stores nothing. ``held``: :meth:`held` read moments ago, used
        again if no submit changed the initiative since (its tasks' states are read anew)."""
        with self._write() as s:
            db.serialize(s, "submit")  # two submits at once: the second sees the first's rows
            stored = _still_held(s, held) or _stored(s, spec.name)
            diff = compare(spec, stored)
            diff.check()
            if diff.nothing_new:
                return diff
            now = time.time()
            if stored is None:
                stored = self._new_initiative(s, spec, now)
                diff.initiative_id = stored.initiative_id
            self._apply(s, spec, stored, diff, now)
            return diff

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
        for change in diff.of(CHANGED):
            _update_plan(s, plans[change.key], stored, now)
        for phase in spec.phases:
            plan_ids.update(_add_plans(s, phase, phases[phase.key], stored))
        keys = {key: task.id for key, task in stored.tasks.items()}
        keys.update(self._add_tasks(s, spec, stored, diff, plan_ids, now))
        _add_edges(s, diff, keys)
        if len(stored.tasks):
            self._block_waiting_on_bad(s, spec, stored, diff, keys)
            touched = diff.new_tasks + [t.key for c in diff.of(CHANGED) for t in plans[c.key].tasks]
            self._promote_some(s, [keys[key] for key in touched])
            self._event(s, "initiative.resubmitted", None, None, spec.name)
        s.execute(
            update(Initiative)
            .where(Initiative.id == stored.initiative_id)
            .values(revision=Initiative.revision + 1)
        )

    def _promote_some(self, s: Session, task_ids: list[int]) -> None:
        """:meth:`_promote` of these tasks only: new ones may wait only for done tasks."""
        db.serialize(s, "promote")
        for chunk in _chunks(task_ids, 500):
            for task_id in s.scalars(_promotable().where(Task.id.in_(chunk))).all():
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
        tasks = [
            _new_task(
                stored.initiative_id, plan_ids[plan.key], position + i, t, now, heights[t.key]
            )
            for i, (plan, t) in enumerate(added)
        ]
        for chunk in range(0, len(tasks), 1000):
            s.add_all(tasks[chunk : chunk + 1000])
            s.flush()
        keys = {t.key: t.id for t in tasks}
        waiting = {task for task, _dep in diff.new_edges}
        roots = [keys[k] for k in keys if k not in waiting]
        for ids in _chunks(roots, 500):
            s.execute(update(Task).where(Task.id.in_(ids)).values(state=S.READY))
        return keys

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

    # -- plans ------------------------------------------------------------------------------

    def plan_rows(self, plan_id: int | None = None) -> list[dict[str, Any]]:
        """Every plan (or one) with its phase, version, where it came from and its tasks'
        states rolled up, in initiative, phase and plan order."""
        stmt = (
            select(Plan, Phase.key, Phase.name, Initiative.name, Initiative.source)
            .join(Phase, Phase.id == Plan.phase_id)
            .join(Initiative, Initiative.id == Phase.initiative_id)
            .order_by(Initiative.id, Phase.position, Plan.position)
        )
        counts = select(Task.plan_id, Task.state, func.count()).group_by(Task.plan_id, Task.state)
        if plan_id is not None:
            stmt, counts = stmt.where(Plan.id == plan_id), counts.where(Task.plan_id == plan_id)
        with self._read() as s:
            states: dict[int, dict[str, int]] = {}
            for pid, state, n in s.execute(counts).all():
                states.setdefault(pid, {})[state.value] = n
            return [
                _plan_row(plan, phase, phase_name, initiative, source, states.get(plan.id, {}))
                for plan, phase, phase_name, initiative, source in s.execute(stmt).all()
            ]

    def plan_detail(self, plan_id: int) -> dict[str, Any]:
        """A plan's row, its tasks and the versions a submit replaced."""
        (detail,) = self.plan_rows(plan_id)
        with self._read() as s:
            plan = s.get_one(Plan, plan_id)
            detail["objective"] = plan.objective
            tasks = select(Task.id, Task.key, Task.name, Task.state).where(Task.plan_id == plan_id)
            detail["task_rows"] = [
                {"id": i, "key": k, "name": n, "state": st.value}
                for i, k, n, st in s.execute(tasks.order_by(Task.position)).all()
            ]
            versions = select(PlanVersion).where(PlanVersion.plan_id == plan_id)
            detail["versions"] = [
                _version_row(v) for v in s.scalars(versions.order_by(PlanVersion.version))
            ]
        return detail

    def find_plan_id(self, ref: str) -> int:
        """A plan by id (``3``) or key (``02-01``); NotFound / ambiguous as a clear error."""
        return self._find(Plan, ref)

    def cancel_plan(self, plan_id: int) -> int:
        """Cancel every task of a plan none of whose tasks has started; what depends on them is
        blocked. Returns how many tasks were cancelled."""
        with self._write() as s:
            plan = s.get_one(Plan, plan_id)
            tasks = s.scalars(select(Task).where(Task.plan_id == plan_id)).all()
            started = [t for t in tasks if t.state not in UNSTARTED or t.attempt > 0]
            if started:
                raise UsageError(
                    f"plan {plan.key}: task {started[0].key} is {started[0].state.value}: only a "
                    "plan none of whose tasks has started can be cancelled (cw task cancel "
                    "cancels one task that has not)"
                )
            live = [t.id for t in tasks if t.state != S.CANCELLED]
            for task_id in live:
                if not self._move(s, task_id, UNSTARTED, S.CANCELLED):
                    raise UsageError(
                        f"plan {plan.key}: a task started meanwhile; nothing cancelled"
                    )
            for task_id in live:
                self._block_dependents(s, task_id)
            return len(live)

    # -- dispatch -------------------------------------------------------------------------

    def promote_ready(self) -> int:
        """Move every pending task whose dependencies are all done to ready."""
        with self._write() as s:
            return len(self._promote(s))

    def _promote(self, s: Session, after: int | None = None) -> list[int]:
        """pending -> ready where every dependency is done; ``after``: only its dependents."""
        # Two dependencies of one task finishing at once must not both miss the other's done.
        db.serialize(s, "promote")
        stmt = _promotable()
        if after is not None:
            stmt = stmt.where(Task.id.in_(_dependents_of().params(after=after)))
        ids = s.scalars(stmt).all()
        return [i for i in ids if self._move(s, i, [S.PENDING], S.READY)]

    def claim_ready_tasks(self, limit: int | None = None) -> list[Claim]:
        """Claim ready agent tasks (ready -> queued, next attempt); checkpoints start waiting."""
        with self._read() as s:  # the common case, nothing ready, takes no write lock
            if s.scalar(select(Task.id).where(Task.state == S.READY).limit(1)) is None:
                return []
        with self._write() as s:
            db.serialize(s, "claim")  # a new agent's name comes from a count of agents
            rows = s.execute(
                select(Task.id, Task.kind)
                .where(Task.state == S.READY, Task.plan_id.not_in(_over_budget_plans(s)))
                .where(or_(Task.not_before.is_(None), Task.not_before <= time.time()))
                .order_by(Task.priority.desc(), Task.height.desc(), Task.position)
                .limit(limit)
            ).all()
            claims = []
            for task_id, kind in rows:
                if kind.startswith("checkpoint"):
                    self._open_checkpoint(s, task_id)
                    continue
                claim = self._claim(s, task_id)
                if claim is not None:
                    claims.append(claim)
            return claims

    def _claim(self, s: Session, task_id: int) -> Claim | None:
        if not self._move(s, task_id, [S.READY], S.QUEUED, attempt=Task.attempt + 1):
            return None
        attempt = s.scalar(select(Task.attempt).where(Task.id == task_id))
        assert attempt is not None
        self._ensure_agent(s, task_id)
        return Claim(task_id, attempt)

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

    def _open_checkpoint(self, s: Session, task_id: int) -> None:
        task = s.get_one(Task, task_id)
        if self._move(s, task_id, [S.READY], S.WAITING):
            options = [_option_text(o) for o in task.extra.get("options", [])]
            self._add_message(
                s,
                Message(
                    task_id=task_id,
                    author="checkpoint",
                    body=task.prompt or task.name,
                    options=options,
                    created_at=time.time(),
                ),
            )

    def queued_claims(self) -> list[Claim]:
        """Tasks claimed but not yet started: what a re-send would send."""
        with self._read() as s:
            rows = s.execute(select(Task.id, Task.attempt).where(Task.state == S.QUEUED)).all()
            return [Claim(task_id, attempt) for task_id, attempt in rows]

    # -- attempts -------------------------------------------------------------------------

    def start_attempt(
        self, claim: Claim, *, worker: str, host: str, lease_seconds: float
    ) -> Workspace | None:
        """queued -> running for this attempt, with a lease; None if the attempt is not ours.

        A redelivered message of a running attempt takes over once the old lease expires
        (raises :class:`LeaseHeld` before that); the old agent's host and pid come back in
        ``Workspace.previous`` so the caller can make sure that process is gone.
        """
        with self._write() as s:
            _lock_task(s, claim.task_id)  # two deliveries of one attempt take over one at a time
            now = time.time()
            run = s.scalar(
                select(AgentRun).where(
                    AgentRun.task_id == claim.task_id, AgentRun.attempt == claim.attempt
                )
            )
            previous: tuple[str, int | None] | None = None
            if self._move(s, claim.task_id, [S.QUEUED], S.RUNNING, of_attempt=claim.attempt):
                agent_id = s.scalar(select(Agent.id).where(Agent.task_id == claim.task_id))
                assert agent_id is not None
                previous = self._lost_before(s, claim)
                run = AgentRun(task_id=claim.task_id, agent_id=agent_id, attempt=claim.attempt)
                s.add(run)
            elif _running_attempt(s, claim) and run is not None:
                if run.lease_expires_at >= now:
                    raise LeaseHeld(run.lease_expires_at - now)
                previous = (run.host, run.pid)
                self._event(s, "attempt.taken_over", claim.task_id, claim.attempt, run.worker)
            else:
                return None
            run.state, run.worker, run.host, run.pid = "running", worker, host, None
            run.started_at = run.heartbeat_at = now
            run.lease_expires_at = now + lease_seconds
            s.flush()
            workspace = _workspace(s, claim, previous, self._deliver_answers(s, claim))
            run.session_id = workspace.session_id or workspace.new_session_id
            return workspace

    def _deliver_answers(self, s: Session, claim: Claim) -> list[dict[str, Any]]:
        """The agent's answered questions this attempt hears: new answers, and again those an
        attempt that never finished heard (taken over, interrupted, stopped, lost: a command
        agent has no session to remember them in)."""
        earlier = aliased(AgentRun)
        heard = s.scalars(
            select(Message)
            .outerjoin(
                earlier,
                (earlier.task_id == Message.task_id)
                & (earlier.attempt == Message.delivered_attempt),
            )
            .where(
                Message.task_id == claim.task_id,
                Message.author == "agent",
                Message.state == "answered",
                or_(
                    Message.delivered_attempt.is_(None),
                    Message.delivered_attempt == claim.attempt,
                    earlier.state.not_in(HEARD_BY),
                ),
            )
            .order_by(Message.id)
        ).all()
        for message in heard:
            if message.delivered_attempt != claim.attempt:
                message.delivered_attempt = claim.attempt
                self._message_event(s, "message.delivered", message, claim.attempt)
        return [
            {"id": m.extra_id, "question": m.body, "options": list(m.options),
             "answer": m.answer or ""}
            for m in heard
        ]  # fmt: skip

    def record_workspace(self, task_id: int, branch: str, worktree: str, base_sha: str) -> None:
        with self._write() as s:
            s.execute(
                update(Task)
                .where(Task.id == task_id, Task.branch.is_(None))
                .values(branch=branch, worktree=worktree, base_sha=base_sha)
            )
            s.execute(
                update(AgentRun)
                .where(AgentRun.task_id == task_id, AgentRun.state == "running")
                .values(worktree=worktree)
            )

    def record_worktree(self, claim: Claim, worktree: str) -> None:
        """Where this attempt keeps the task's worktree: a path on its own host (the run
        records the host), which the task shows until another host takes it over."""
        with self._write() as s:
            s.execute(update(Task).where(Task.id == claim.task_id).values(worktree=worktree))
            s.execute(
                update(AgentRun)
                .where(AgentRun.task_id == claim.task_id, AgentRun.attempt == claim.attempt)
                .values(worktree=worktree)
            )

    def record_heartbeat(self, claim: Claim, lease_seconds: float, pid: int | None = None) -> bool:
        """Extend the lease; False when the agent must stop (lost its task, or a stop request)."""
        with self._write() as s:
            now = time.time()
            task = _lock_task(s, claim.task_id)  # the reconciler may be releasing it
            if task is None or task.attempt != claim.attempt or task.state != S.RUNNING:
                return False
            run = s.scalars(
                select(AgentRun).where(
                    AgentRun.task_id == claim.task_id, AgentRun.attempt == claim.attempt
                )
            ).one()
            if run.pid is None and pid is not None:
                self._event(s, "agent.started", claim.task_id, claim.attempt, pid)
            run.heartbeat_at, run.lease_expires_at, run.pid = now, now + lease_seconds, pid
            s.execute(
                update(Agent).where(Agent.task_id == claim.task_id).values(last_activity_at=now)
            )
            return task.stop_requested_at is None

    def record_session(self, claim: Claim, session_id: str) -> None:
        with self._write() as s:
            s.execute(
                update(Agent).where(Agent.task_id == claim.task_id).values(session_id=session_id)
            )
            s.execute(
                update(AgentRun)
                .where(AgentRun.task_id == claim.task_id, AgentRun.attempt == claim.attempt)
                .values(session_id=session_id)
            )

    def finish_attempt(self, claim: Claim, result: AttemptResult, adapter: str) -> bool:
        """Move the task by the attempt's outcome; False if the attempt was stale.

        done -> merging (a merge is queued); failed -> failed (dependents blocked);
        questions -> waiting (one message per question); stopped -> stopped.
        """
        target, _run_state = OUTCOMES[result.outcome]
        values: dict[str, Any] = {"head_sha": result.head_sha, "not_before": result.not_before}
        if result.outcome == "failed":
            values["last_error"] = result.error
        with self._write() as s:
            if not self._move(
                s, claim.task_id, [S.RUNNING], target, of_attempt=claim.attempt, **values
            ):
                return False
            self._close_run(s, claim, result, adapter)
            if result.exited_at is not None:
                s.add(Event(at=result.exited_at, kind="agent.exited", task_id=claim.task_id,
                            attempt=claim.attempt, data={}))  # fmt: skip
            self._after_attempt(s, claim, result)
            return True

    def record_agent_finished(self, claim: Claim, result: AttemptResult) -> bool:
        """The attempt's agent finished its work (event ``agent.finished`` with the result),
        before cw commits it and hands it to the merge: a later attempt, if this one is lost
        first, goes straight to merge instead of running the agent again. False if stale."""
        with self._write() as s:
            task = _lock_task(s, claim.task_id)
            if task is None or task.state != S.RUNNING or task.attempt != claim.attempt:
                return False
            s.add(Event(at=time.time(), kind="agent.finished", task_id=claim.task_id,
                        attempt=claim.attempt, data={"result": asdict(result)}))  # fmt: skip
            return True

    def finished_agent(self, claim: Claim) -> AttemptResult | None:
        """The result of an earlier agent of the task that finished but whose attempt never
        handed its work on (every attempt since was lost, or failed in cw's machinery)."""
        with self._read() as s:
            event = s.scalar(
                select(Event)
                .where(
                    Event.task_id == claim.task_id,
                    Event.kind == "agent.finished",
                    Event.attempt <= claim.attempt,
                )
                .order_by(Event.id.desc())
                .limit(1)
            )
            if event is None or event.attempt is None:
                return None
            since = s.scalars(
                select(AgentRun.state).where(
                    AgentRun.task_id == claim.task_id,
                    AgentRun.attempt >= event.attempt,
                    AgentRun.attempt < claim.attempt,
                )
            ).all()
            if any(state not in NO_RESULT for state in since):
                return None
            return AttemptResult(**event.data["result"])

    def retry_machinery(self, claim: Claim, error: str, retries: int, pause: float) -> bool:
        """cw's machinery (git, the file system) failed the attempt, not its agent: the task goes
        back to ready for a new attempt after ``pause x 2^(n-1)`` seconds (the run is
        ``retried``), ``retries`` times; after that it fails with ``error``. True if retried."""
        with self._write() as s:
            task = _lock_task(s, claim.task_id)
            if task is None or task.state != S.RUNNING or task.attempt != claim.attempt:
                return False
            count = int(task.extra.get(MACHINERY_RETRIES, 0)) + 1
            retried = count <= retries
            if retried:
                self._move(s, claim.task_id, [S.RUNNING], S.READY, of_attempt=claim.attempt,
                           not_before=time.time() + pause * 2 ** (count - 1),
                           extra={**task.extra, MACHINERY_RETRIES: count})  # fmt: skip
            else:
                error = f"{error} (cw's machinery failed {count} times; see docs/reliability.md)"
                self._move(s, claim.task_id, [S.RUNNING], S.FAILED, of_attempt=claim.attempt,
                           last_error=error)  # fmt: skip
                self._block_dependents(s, claim.task_id)
            s.execute(
                update(AgentRun)
                .where(AgentRun.task_id == claim.task_id, AgentRun.attempt == claim.attempt)
                .values(
                    state="retried" if retried else "failed", finished_at=time.time(), error=error
                )
            )
            self._event(s, "attempt.retried" if retried else "attempt.failed", claim.task_id,
                        claim.attempt, error)  # fmt: skip
            return retried

    def lost_agents(self, task_id: int, host: str) -> list[int]:
        """Process groups of this task's agents on ``host`` whose attempts were lost: a worker
        that died may have left them running."""
        with self._read() as s:
            pids = s.scalars(
                select(AgentRun.pid).where(
                    AgentRun.task_id == task_id,
                    AgentRun.host == host,
                    AgentRun.state == "lost",
                    AgentRun.pid.is_not(None),
                )
            ).all()
            return [pid for pid in pids if pid is not None]

    def _after_attempt(self, s: Session, claim: Claim, result: AttemptResult) -> None:
        if result.outcome == "done":
            branch = s.scalar(select(Task.branch).where(Task.id == claim.task_id)) or ""
            s.add(Merge(task_id=claim.task_id, attempt=claim.attempt, state="queued",
                        branch=branch, queued_at=time.time()))  # fmt: skip
        elif result.outcome == "failed":
            self._block_dependents(s, claim.task_id)
        elif result.outcome == "questions":
            agent_id = s.scalar(select(Agent.id).where(Agent.task_id == claim.task_id))
            for question in result.questions or [NO_QUESTION]:
                self._add_message(s, _question(claim.task_id, agent_id, question))

    def _close_run(self, s: Session, claim: Claim, result: AttemptResult, adapter: str) -> None:
        now = time.time()
        s.execute(
            update(AgentRun)
            .where(AgentRun.task_id == claim.task_id, AgentRun.attempt == claim.attempt)
            .values(
                state=OUTCOMES[result.outcome][1],
                finished_at=now,
                exit_code=result.exit_code,
                cost_usd=result.cost_usd,
                turns=result.turns,
                usage=result.usage,
                duration_ms=result.duration_ms,
                summary=result.summary,
                error=result.error,
                stdout_path=result.stdout_path,
                stderr_path=result.stderr_path,
                **({"session_id": result.session_id} if result.session_id else {}),
            )
        )
        agent = s.scalars(select(Agent).where(Agent.task_id == claim.task_id)).one()
        agent.adapter = adapter
        agent.last_activity_at = now
        agent.cost_usd += result.cost_usd or 0.0
        agent.session_id = result.session_id or agent.session_id

    def _block_dependents(self, s: Session, task_id: int) -> None:
        frontier = [task_id]
        while frontier:
            dependents = s.scalars(
                select(TaskDependency.task_id).where(TaskDependency.depends_on_id.in_(frontier))
            ).all()
            frontier = [d for d in dependents if self._move(s, d, [S.PENDING], S.BLOCKED)]

    def retry_task(self, task_id: int) -> None:
        """failed -> ready (a new attempt on the same branch); unblock what waited on it."""
        with self._write() as s:
            extra = {
                k: v for k, v in s.get_one(Task, task_id).extra.items() if k != MACHINERY_RETRIES
            }
            if not self._move(s, task_id, [S.FAILED], S.READY, last_error=None, extra=extra):
                raise UsageError(
                    f"task {self._describe(s, task_id)}: only a failed task can be retried"
                )
            self._close_notices(s, task_id, "retried")
            self._unblock_dependents(s, task_id)

    def _close_notices(self, s: Session, task_id: int, answer: str) -> None:
        """cw's own pending notices about a task (e.g. "could not be integrated") are settled."""
        attempt = s.scalar(select(Task.attempt).where(Task.id == task_id))
        notices = s.scalars(
            select(Message).where(
                Message.task_id == task_id, Message.author == "cw", Message.state == "pending"
            )
        ).all()
        for message in notices:
            message.state, message.answer, message.answered_at = "answered", answer, time.time()
            self._message_event(s, "message.answered", message, attempt)

    def cancel_task(self, task_id: int) -> None:
        """A task that has not started is cancelled; everything downstream is blocked."""
        with self._write() as s:
            if not self._move(s, task_id, [S.PENDING, S.READY, S.BLOCKED], S.CANCELLED):
                raise UsageError(
                    f"task {self._describe(s, task_id)}: only a task that has not started can be "
                    "cancelled"
                )
            self._block_dependents(s, task_id)

    @staticmethod
    def _describe(s: Session, task_id: int) -> str:
        task = s.get_one(Task, task_id)
        return f"{task.key} is {task.state.value}"

    def _unblock_dependents(self, s: Session, task_id: int) -> None:
        frontier = [task_id]
        while frontier:
            dependents = s.scalars(
                select(TaskDependency.task_id).where(TaskDependency.depends_on_id.in_(frontier))
            ).all()
            frontier = [
                d
                for d in dependents
                if not _has_bad_dependency(s, d) and self._move(s, d, [S.BLOCKED], S.PENDING)
            ]
        self._promote(s)

    # -- a person steers agents ------------------------------------------------------------

    def request_stop(self, task_id: int) -> tuple[TaskState, str | None, int | None]:
        """Ask the running agent of a task to stop (a queued one stops at once).

        Returns the task's state and, for a running agent, its host and process group so
        the caller may signal it directly; the worker notices the request at its heartbeat.
        """
        with self._write() as s:
            if self._move(s, task_id, [S.QUEUED], S.STOPPED):
                return S.STOPPED, None, None
            task = _lock_task(s, task_id)
            if task is None:
                raise NotFound(f"no task {task_id}: see `cw task list`")
            if task.state != S.RUNNING:
                raise UsageError(f"task {self._describe(s, task_id)}: its agent is not running")
            task.stop_requested_at = time.time()
            self._event(s, "agent.stop_requested", task_id, task.attempt)
            run = s.scalars(
                select(AgentRun).where(
                    AgentRun.task_id == task_id, AgentRun.attempt == task.attempt
                )
            ).one()
            return S.RUNNING, run.host, run.pid

    def resume_task(self, task_id: int) -> None:
        """A stopped task becomes ready again; its next attempt resumes the same session."""
        with self._write() as s:
            if not self._move(s, task_id, [S.STOPPED], S.READY, stop_requested_at=None):
                raise UsageError(
                    f"task {self._describe(s, task_id)}: only a stopped agent can be resumed"
                )

    def make_ready(self, task_id: int) -> None:
        """For ``cw agent spawn``: the task must be ready (all its dependencies merged)."""
        with self._write() as s:
            self._promote(s)
            task = s.get_one(Task, task_id)
            if task.state == S.READY:
                return
            waits = _keys_not_done(s, task_id)
            why = f"; it waits on {', '.join(waits)}" if waits else ""
            raise UsageError(f"task {self._describe(s, task_id)}: cannot start it now{why}")

    def stop_requested(self, claim: Claim) -> bool:
        with self._read() as s:
            at = s.scalar(
                select(Task.stop_requested_at).where(
                    Task.id == claim.task_id, Task.attempt == claim.attempt
                )
            )
            return at is not None

    def claim_task(self, task_id: int) -> Claim:
        """Claim one ready task (``cw agent spawn``), ahead of everything else."""
        with self._write() as s:
            db.serialize(s, "claim")
            kind = s.scalar(select(Task.kind).where(Task.id == task_id))
            if kind and kind.startswith("checkpoint"):
                raise UsageError(
                    f"task {self._describe(s, task_id)}: a checkpoint waits for a person"
                )
            claim = self._claim(s, task_id)
            if claim is None:
                raise UsageError(f"task {self._describe(s, task_id)}: it is not ready")
            return claim

    def task_state(self, task_id: int) -> TaskState:
        with self._read() as s:
            return s.get_one(Task, task_id).state

    def agent_of(self, task_id: int) -> str | None:
        with self._read() as s:
            return s.scalar(select(Agent.name).where(Agent.task_id == task_id))

    def agent_task_id(self, name: str) -> int:
        with self._read() as s:
            task_id = s.scalar(select(Agent.task_id).where(Agent.name == name))
        if task_id is None:
            raise NotFound(f"no agent {name!r}: see `cw agent list`")
        return task_id

    def set_budget(self, *, plan: str | None, initiative: str | None, usd: float) -> None:
        """Cap the cost of a plan or an initiative; no new work starts there once it is spent."""
        model: Any = Plan if plan else Initiative
        column = Plan.key if plan else Initiative.name
        with self._write() as s:
            result = s.execute(
                update(model).where(column == (plan or initiative)).values(budget_usd=usd)
            )
            if result.rowcount == 0:  # type: ignore[attr-defined]
                what = f"plan {plan!r}" if plan else f"initiative {initiative!r}"
                raise NotFound(f"no {what}: see `cw status`")
            self._event(s, "budget.set", None, None, f"{plan or initiative}: {usd}")

    def budgets(self) -> list[dict[str, Any]]:
        """Every budget with what has been spent under it."""
        with self._read() as s:
            return _budget_rows(s)

    # -- messages -------------------------------------------------------------------------

    def _add_message(self, s: Session, message: Message) -> None:
        s.add(message)
        s.flush()
        self._message_event(s, "message.created", message)

    @staticmethod
    def _message_event(s: Session, kind: str, message: Message, attempt: int | None = None) -> None:
        s.add(Event(at=time.time(), kind=kind, task_id=message.task_id, attempt=attempt,
                    data={"message_id": message.id}))  # fmt: skip

    def message_rows(self, *, pending: bool = False) -> list[dict[str, Any]]:
        """Every message (or the pending ones), oldest first, with its task's key and agent."""
        stmt = _message_query().order_by(Message.id)
        if pending:
            stmt = stmt.where(Message.state == "pending")
        with self._read() as s:
            return [_message_row(r._mapping, detail=False) for r in s.execute(stmt)]

    def message_detail(self, message_id: int) -> dict[str, Any]:
        """One message as in :meth:`message_rows`, plus its task's name and state."""
        with self._read() as s:
            row = s.execute(_message_query().where(Message.id == message_id)).first()
        if row is None:
            raise NotFound(f"no message {message_id}: see `cw message list`")
        return _message_row(row._mapping, detail=True)

    def answer_message(self, message_id: int, answer: str) -> str:
        """Record a person's answer and move what it unblocks; one line saying what happened.

        An agent's last answered question makes its task ready (the session resumes); an
        approved checkpoint, or a decision's chosen option, is done and its dependents proceed;
        a checkpoint answered with anything else sends the agents' work it checked back.
        """
        with self._write() as s:
            message = s.get(Message, message_id)
            if message is None:
                raise NotFound(f"no message {message_id}: see `cw message list`")
            # Answers to one task's messages go one at a time (the last one moves the task),
            # locking the task before the message, as every other writer does.
            task = _lock_task(s, message.task_id)
            assert task is not None
            message = s.get_one(Message, message_id, with_for_update=True, populate_existing=True)
            message.answer = _checked_answer(message, task, answer)
            message.state, message.answered_at = "answered", time.time()
            self._message_event(s, "message.answered", message, task.attempt)
            if message.author == "agent":
                return self._answered_question(s, task)
            if message.author == "checkpoint" and task.state == S.WAITING:
                return self._answered_checkpoint(s, task, message.body, message.answer)
            return f"answer recorded; task {task.key} is {task.state.value}"

    def _answered_question(self, s: Session, task: Task) -> str:
        left = s.scalar(
            select(func.count(Message.id)).where(
                Message.task_id == task.id, Message.author == "agent", Message.state == "pending"
            )
        )
        if left:
            are = "questions of task {} are" if left > 1 else "question of task {} is"
            return f"{left} more {are.format(task.key)} pending"
        state = task.state.value
        if not self._move(s, task.id, [S.WAITING], S.READY):
            return f"answer recorded; task {task.key} is {state}"
        session = s.scalar(select(Agent.session_id).where(Agent.task_id == task.id))
        how = "resumes its agent's session" if session else "runs again with your answers"
        return f"task {task.key} {how}"

    def _answered_checkpoint(self, s: Session, task: Task, question: str, answer: str) -> str:
        decision = task.kind == DECISION
        if not (decision or answers.is_approval(answer)):
            return self._send_back(s, task, question, answer)
        self._move(s, task.id, [S.WAITING], S.DONE, extra={**task.extra, "answer": answer})
        self._promote(s)
        verb = f"decided ({answer})" if decision else "approved"
        return f"checkpoint {task.key} {verb}: its dependents proceed"

    def _send_back(self, s: Session, task: Task, question: str, comments: str) -> str:
        """The person did not approve: the agents' work the checkpoint checked goes back."""
        deps = s.scalars(
            select(Task)
            .join(TaskDependency, TaskDependency.depends_on_id == Task.id)
            .where(TaskDependency.task_id == task.id)
            .order_by(Task.position)
        ).all()
        reopen = [
            d.id
            for d in deps
            if d.state == S.DONE and d.branch and not d.kind.startswith("checkpoint")
        ]
        if not reopen:
            word = "done" if task.kind == HUMAN_ACTION else "approved"
            raise UsageError(
                f"checkpoint {task.key}: no agent's work before it to send your comments to; "
                f"answer `{word}` to let it pass"
            )
        bounce = {"kind": "review", "checkpoint": task.key, "question": question,
                  "comments": comments}  # fmt: skip
        for dep_id in reopen:
            self._move(s, dep_id, [S.DONE], S.READY, bounce=bounce, last_error=None)
        self._move(s, task.id, [S.WAITING], S.PENDING)
        keys = ", ".join(d.key for d in deps if d.id in reopen)
        return (
            f"checkpoint {task.key} sent back to {keys} with your comments; it asks again "
            "once that work is merged"
        )

    def unnotified_messages(self) -> list[int]:
        """Pending messages the notification hook has not run for yet, oldest first."""
        with self._read() as s:
            return list(
                s.scalars(
                    select(Message.id)
                    .where(Message.state == "pending", Message.notified_at.is_(None))
                    .order_by(Message.id)
                )
            )

    def mark_notified(self, message_id: int, outcome: str) -> None:
        """The hook ran for this message (whatever it did): it does not run for it again."""
        with self._write() as s:
            message = s.get_one(Message, message_id)
            message.notified_at = time.time()
            s.add(Event(at=message.notified_at, kind="message.notified", task_id=message.task_id,
                        data={"message_id": message_id, "note": outcome}))  # fmt: skip

    def edit_task(
        self, task_id: int, *, prompt: str | None = None, priority: int | None = None
    ) -> None:
        """Change the prompt or priority of a task that has not started yet."""
        values: dict[str, Any] = {}
        if prompt is not None:
            if not prompt.strip():
                raise UsageError(f"task {task_id}: the prompt would be empty; write what to do")
            values["prompt"] = prompt
        if priority is not None:
            values["priority"] = priority
        if not values:
            raise UsageError(f"task {task_id}: nothing to change (a prompt or a priority)")
        with self._write() as s:
            if s.get(Task, task_id) is None:
                raise NotFound(f"no task {task_id}: see `cw task list`")
            result = s.execute(
                update(Task)
                .where(Task.id == task_id, Task.state.in_(UNSTARTED), Task.attempt == 0)
                .values(**values)
            )
            if result.rowcount != 1:  # type: ignore[attr-defined]
                raise UsageError(
                    f"task {self._describe(s, task_id)}: only a task that has not started can "
                    "be edited"
                )
            self._event(s, "task.edited", task_id, 0, sorted(values))

    # -- merges ---------------------------------------------------------------------------

    def begin_merge(self, claim: Claim) -> MergeJob | None:
        """Take the queued merge of this attempt (again, after a crash); None if not ours."""
        with self._write() as s:
            task = _lock_task(s, claim.task_id)
            if task is None or task.state != S.MERGING or task.attempt != claim.attempt:
                return None
            s.execute(
                update(Merge)
                .where(Merge.task_id == claim.task_id, Merge.attempt == claim.attempt)
                .values(state="merging", started_at=time.time())
            )
            return MergeJob(
                claim.task_id, claim.attempt, task.key, task.name, task.branch or "",
                task.worktree, task.verify, task.base_sha,
            )  # fmt: skip

    def finish_merge(self, claim: Claim, report: MergeReport) -> bool:
        """merging -> done (then promote what became ready), or -> conflict (no bouncing)."""
        with self._write() as s:
            if report.sha is not None:
                moved = self._move(
                    s, claim.task_id, [S.MERGING], S.DONE, of_attempt=claim.attempt,
                    merged_sha=report.sha, bounce={}, conflict_files=[], last_error=None,
                )  # fmt: skip
            else:
                moved = self._move(
                    s, claim.task_id, [S.MERGING], S.CONFLICT, of_attempt=claim.attempt,
                    conflict_files=report.conflict_files,
                    last_error="merge conflict in " + ", ".join(report.conflict_files),
                )  # fmt: skip
            if not moved:
                return False
            self._record_merge(s, claim, report, "merged" if report.sha else "conflict")
            if report.sha is not None:
                self._promote(s, after=claim.task_id)
            return True

    def bounce(
        self, claim: Claim, report: MergeReport, *, intent: list[dict[str, str]], max_bounces: int
    ) -> Claim | None:
        """Send a conflicting or red merge back to its agent as a new attempt.

        Returns the new attempt's claim; None when the task stopped instead: ``conflict`` with
        bouncing off (``max_bounces`` 0), or ``failed`` with a message to a person once it has
        bounced ``max_bounces`` times.
        """
        if max_bounces == 0 and not report.rejected:
            self.finish_merge(claim, report)
            return None
        with self._write() as s:
            task = _lock_task(s, claim.task_id)
            if task is None or task.state != S.MERGING or task.attempt != claim.attempt:
                return None
            self._record_merge(s, claim, report, "verify_failed" if report.rejected else "conflict")
            why = _bounce_reason(report)
            no_changes = task.head_sha is not None and task.head_sha == task.base_sha
            if task.bounces >= (min(max_bounces, 1) if no_changes else max_bounces):
                self._give_up(s, claim, f"{why}; sent back {task.bounces} times")
                return None
            bounce = {
                "kind": "verify" if report.rejected else "conflict",
                "files": report.conflict_files,
                "output": _bounce_output(report),
                "intent": intent,
                "no_changes": no_changes,
            }
            self._move(
                s, claim.task_id, [S.MERGING], S.QUEUED, of_attempt=claim.attempt,
                attempt=Task.attempt + 1, bounces=Task.bounces + 1, bounce=bounce,
                conflict_files=report.conflict_files, last_error=why,
            )  # fmt: skip
            return Claim(claim.task_id, claim.attempt + 1)

    def _give_up(self, s: Session, claim: Claim, why: str) -> None:
        self._move(s, claim.task_id, [S.MERGING], S.FAILED, of_attempt=claim.attempt,
                   last_error=why)  # fmt: skip
        agent_id = s.scalar(select(Agent.id).where(Agent.task_id == claim.task_id))
        self._add_message(s, Message(task_id=claim.task_id, agent_id=agent_id, author="cw",
                          body=f"This task could not be integrated: {why}. Resolve it by hand "
                          "on its branch and `cw task retry` it, or cancel what depends on it.",
                          created_at=time.time()))  # fmt: skip
        self._block_dependents(s, claim.task_id)

    @staticmethod
    def _record_merge(s: Session, claim: Claim, report: MergeReport, state: str) -> None:
        s.execute(
            update(Merge)
            .where(Merge.task_id == claim.task_id, Merge.attempt == claim.attempt)
            .values(
                state=state, result_sha=report.sha, conflict_files=report.conflict_files,
                finished_at=time.time(), output=report.output[-20_000:],
                verify_command=report.verify_command, verify_exit_code=report.verify_exit_code,
                verify_output=report.verify_output,
            )
        )  # fmt: skip

    def begun_merges(self) -> list[Claim]:
        """Merges a merge worker began and never finished (it died, or it is still at work)."""
        return self._merges_in("merging")

    def merges_not_begun(self) -> list[Claim]:
        """Tasks merging whose merge no merge worker has begun: its message may be lost."""
        return self._merges_in("queued")

    def _merges_in(self, merge_state: str) -> list[Claim]:
        """The current attempts of merging tasks whose merge row is in ``merge_state``."""
        with self._read() as s:
            rows = s.execute(
                select(Task.id, Task.attempt)
                .join(Merge, (Merge.task_id == Task.id) & (Merge.attempt == Task.attempt))
                .where(Task.state == S.MERGING, Merge.state == merge_state)
            ).all()
            return [Claim(task_id, attempt) for task_id, attempt in rows]

    def fail_merge(self, claim: Claim, error: str) -> bool:
        with self._write() as s:
            moved = self._move(
                s, claim.task_id, [S.MERGING], S.FAILED, of_attempt=claim.attempt, last_error=error
            )
            if moved:
                s.execute(
                    update(Merge)
                    .where(Merge.task_id == claim.task_id, Merge.attempt == claim.attempt)
                    .values(state="failed", finished_at=time.time(), output=error)
                )
                self._block_dependents(s, claim.task_id)
            return moved

    # -- reading --------------------------------------------------------------------------

    def task_rows(self) -> list[dict[str, Any]]:
        """Every task with its place in the hierarchy and its agent, for listings."""
        with self._read() as s:
            rows = s.execute(
                select(
                    Task.id,
                    Task.key,
                    Task.name,
                    Task.kind,
                    Task.state,
                    Task.attempt,
                    Task.branch,
                    Task.last_error,
                    Task.state_changed_at,
                    Plan.key.label("plan"),
                    Phase.key.label("phase"),
                    Initiative.name.label("initiative"),
                    Agent.name.label("agent"),
                    func.coalesce(Agent.cost_usd, 0.0).label("cost_usd"),
                    NO_CHANGES.label("no_changes"),
                )
                .join(Plan, Plan.id == Task.plan_id)
                .join(Phase, Phase.id == Plan.phase_id)
                .join(Initiative, Initiative.id == Task.initiative_id)
                .outerjoin(Agent, Agent.task_id == Task.id)
                .order_by(Task.initiative_id, Task.position)
            ).all()
            return [dict(r._mapping) for r in rows]

    def workspaces(self) -> list[dict[str, Any]]:
        """Every task's git footprint: key, kind, state, branch, worktree, base/head/merged sha."""
        with self._read() as s:
            rows = s.execute(
                select(
                    Task.id, Task.key, Task.kind, Task.state, Task.branch, Task.worktree,
                    Task.base_sha, Task.head_sha, Task.merged_sha,
                ).order_by(Task.id)
            ).all()  # fmt: skip
            return [dict(r._mapping) for r in rows]

    def merge_rows(self) -> list[dict[str, Any]]:
        """Every merge attempt, newest first, with its task's key and state."""
        with self._read() as s:
            rows = s.execute(
                select(Merge, Task.key, Task.state).join(Task, Task.id == Merge.task_id)
                .order_by(Merge.id.desc())
            ).all()  # fmt: skip
            out = []
            for merge, key, state in rows:
                row = {c.name: getattr(merge, c.name) for c in Merge.__table__.columns}
                out.append({**row, "task": key, "task_state": state.value})
            return out

    def dependency_pairs(self) -> list[tuple[int, int]]:
        with self._read() as s:
            rows = s.execute(select(TaskDependency.task_id, TaskDependency.depends_on_id)).all()
            return [(a, b) for a, b in rows]

    def agent_rows(self) -> list[dict[str, Any]]:
        """Every agent with its task and its latest attempt."""
        latest = (
            select(AgentRun.agent_id, func.max(AgentRun.attempt).label("attempt"))
            .group_by(AgentRun.agent_id)
            .subquery()
        )
        run = aliased(AgentRun)
        with self._read() as s:
            rows = s.execute(
                select(
                    Agent.id,
                    Agent.name,
                    Agent.adapter,
                    Agent.session_id,
                    Agent.cost_usd,
                    Agent.last_activity_at,
                    Task.id.label("task_id"),
                    Task.key.label("task"),
                    Task.state.label("task_state"),
                    Task.worktree,
                    run.state.label("run_state"),
                    run.attempt,
                    run.worker,
                    run.host,
                    run.pid,
                    run.started_at,
                    run.finished_at,
                    run.lease_expires_at,
                )
                .join(Task, Task.id == Agent.task_id)
                .outerjoin(latest, latest.c.agent_id == Agent.id)
                .outerjoin(run, (run.agent_id == Agent.id) & (run.attempt == latest.c.attempt))
                .order_by(Agent.id)
            ).all()
            return [dict(r._mapping) for r in rows]

    def find_task_id(self, ref: str) -> int:
        """A task by id (``12``) or key (``02-03-1``); NotFound / ambiguous as a clear error."""
        return self._find(Task, ref)

    def _find(self, model: type[Task] | type[Plan], ref: str) -> int:
        what = model.__tablename__.rstrip("s")
        with self._read() as s:
            if ref.isdigit() and s.get(model, int(ref)) is not None:
                return int(ref)
            ids = s.scalars(select(model.id).where(model.key == ref)).all()
        if not ids:
            raise NotFound(f"no {what} {ref!r}: see `cw {what} list`")
        if len(ids) > 1:
            raise NotFound(f"{what} key {ref!r} is in several initiatives; use its id: {ids}")
        return ids[0]

    def task_detail(self, task_id: int) -> dict[str, Any]:
        with self._read() as s:
            task = s.get_one(Task, task_id)
            detail = {c.name: getattr(task, c.name) for c in Task.__table__.columns}
            detail["plan"] = task.plan.key
            detail["no_changes"] = bool(s.scalar(select(NO_CHANGES).where(Task.id == task_id)))
            detail["depends_on"] = _keys(
                s, TaskDependency.depends_on_id, TaskDependency.task_id, task_id
            )
            detail["dependents"] = _keys(
                s, TaskDependency.task_id, TaskDependency.depends_on_id, task_id
            )
            agent = s.scalar(select(Agent).where(Agent.task_id == task_id))
            detail["agent"] = agent.name if agent else None
            detail["session_id"] = agent.session_id if agent else None
            detail["runs"] = _rows(s, select(AgentRun).where(AgentRun.task_id == task_id))
            detail["merges"] = _rows(s, select(Merge).where(Merge.task_id == task_id))
            detail["messages"] = _rows(s, select(Message).where(Message.task_id == task_id))
            return detail

    def events(self, task_id: int | None = None) -> list[dict[str, Any]]:
        stmt = select(Event).order_by(Event.id)
        if task_id is not None:
            stmt = stmt.where(Event.task_id == task_id)
        with self._read() as s:
            return _rows(s, stmt)

    def broker_marked(self) -> bool:
        """Whether this district has put its marker in the broker (remembered once true)."""
        if not self._broker_marked:
            with self._read() as s:
                self._broker_marked = s.scalar(select(District.broker_marked_at)) is not None
        return self._broker_marked

    def mark_broker(self) -> None:
        with self._write() as s:
            s.execute(
                update(District)
                .where(District.broker_marked_at.is_(None))
                .values(broker_marked_at=time.time())
            )
        self._broker_marked = True

    def ping(self) -> None:
        with self._read() as s:
            s.execute(text("SELECT 1"))

    # -- shutdown -------------------------------------------------------------------------

    def request_shutdown(self, worker: str) -> list[int]:
        """``worker`` is shutting down: its running attempts are to end as interrupted.

        Each running attempt of the worker gets an ``agent.shutdown_requested`` event, which its
        heartbeat reads (:meth:`shutdown_requested`); one that starts after this call finds the
        worker's ``worker.shutting_down`` event (:meth:`worker_shutting_down`). Returns the
        process groups of their agents, so the caller can signal them at once.
        """
        with self._write() as s:
            self._event(s, "worker.shutting_down", None, None, worker)
            rows = s.execute(
                select(AgentRun.task_id, AgentRun.attempt, AgentRun.pid)
                .join(Task, (Task.id == AgentRun.task_id) & (Task.attempt == AgentRun.attempt))
                .where(
                    AgentRun.worker == worker,
                    AgentRun.state == "running",
                    Task.state == S.RUNNING,
                )
            ).all()
            for task_id, attempt, _pid in rows:
                self._event(s, "agent.shutdown_requested", task_id, attempt, worker)
            return [pid for _task, _attempt, pid in rows if pid]

    def shutdown_requested(self, claim: Claim) -> bool:
        """True once the worker running this attempt asked it to end (it is shutting down)."""
        with self._read() as s:
            found = s.scalar(
                select(Event.id)
                .where(
                    Event.task_id == claim.task_id,
                    Event.attempt == claim.attempt,
                    Event.kind == "agent.shutdown_requested",
                )
                .limit(1)
            )
            return found is not None

    def worker_shutting_down(self, worker: str, since: float) -> bool:
        """True when ``worker`` began shutting down at ``since`` or later."""
        with self._read() as s:
            notes = s.scalars(
                select(Event.data).where(
                    Event.kind == "worker.shutting_down",
                    Event.task_id.is_(None),
                    Event.at >= since,
                )
            ).all()
            return any(note.get("note") == worker for note in notes)

    # -- reconciling ----------------------------------------------------------------------

    def release_lost_attempts(self, now: float) -> list[tuple[Claim, tuple[str, int | None]]]:
        """running -> ready for every attempt whose lease expired before ``now``.

        Its worker stopped renewing the lease (it died, or lost the database): the run is
        marked ``lost`` and the next claim starts a new attempt that resumes the session. The
        attempt number fences the old worker: its next heartbeat finds the task gone and stops
        its agent. Returns each lost attempt with the (host, process group) of its agent.
        """
        with self._write() as s:
            runs = s.scalars(
                select(AgentRun)
                .join(Task, (Task.id == AgentRun.task_id) & (Task.attempt == AgentRun.attempt))
                .where(
                    Task.state == S.RUNNING,
                    AgentRun.state == "running",
                    AgentRun.lease_expires_at < now,
                )
                .with_for_update(of=Task)  # tasks, then runs: the order every writer locks in
            ).all()
            lost = []
            for run in runs:
                claim = Claim(run.task_id, run.attempt)
                if not self._move(s, run.task_id, [S.RUNNING], S.READY, of_attempt=run.attempt):
                    continue
                run.state, run.finished_at = "lost", now
                run.error = (
                    f"lost: its lease expired {now - run.lease_expires_at:.1f} s before the "
                    f"reconciler looked; worker {run.worker or '?'} stopped renewing it"
                )
                self._event(s, "attempt.lost", run.task_id, run.attempt, run.worker)
                lost.append((claim, (run.host, run.pid)))
            return lost

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

    def take_resends(self, claims: Iterable[Claim], state: TaskState, before: float) -> list[Claim]:
        """The claims this caller re-sends the message of: still ``state`` under the same
        attempt, and neither sent nor re-sent after ``before``. Each is marked re-sent now
        (compare-and-set), so two reconcilers never both re-send one."""
        taken = []
        with self._write() as s:
            now = time.time()
            for claim in claims:
                result = s.execute(
                    update(Task)
                    .where(
                        Task.id == claim.task_id,
                        Task.state == state,
                        Task.attempt == claim.attempt,
                        Task.state_changed_at <= before,
                        or_(Task.resent_at.is_(None), Task.resent_at <= before),
                    )
                    .values(resent_at=now)
                )
                if result.rowcount == 1:  # type: ignore[attr-defined]
                    self._event(s, "task.resent", claim.task_id, claim.attempt, state.value)
                    taken.append(claim)
        return taken

    def finished_branches(self, before: float) -> set[str]:
        """Branches of tasks done or cancelled before ``before``: every host removes its own
        worktrees of them."""
        with self._read() as s:
            return set(
                s.scalars(
                    select(Task.branch).where(
                        Task.state.in_([S.DONE, S.CANCELLED]),
                        Task.branch.is_not(None),
                        Task.state_changed_at <= before,
                    )
                )
            )

    def parked_count(self, now: float) -> int:
        """Ready tasks that may not start before a later time (a usage limit resets then)."""
        with self._read() as s:
            return (
                s.scalar(
                    select(func.count(Task.id)).where(Task.state == S.READY, Task.not_before > now)
                )
                or 0
            )


def _stored(s: Session, name: str) -> Stored | None:
    """What the district holds of the initiative ``name`` (None if it was never submitted)."""
    row = s.execute(select(Initiative.id, Initiative.revision).where(Initiative.name == name))
    initiative_id, revision = row.one_or_none() or (None, 0)
    if initiative_id is None:
        return None
    phases = s.execute(
        select(Phase.key, Phase.id)
        .where(Phase.initiative_id == initiative_id)
        .order_by(Phase.position, Phase.id)
    ).all()
    plans = s.execute(
        select(Plan.id, Plan.key, Phase.key, Plan.version, Plan.prints)
        .join(Phase, Phase.id == Plan.phase_id)
        .where(Phase.initiative_id == initiative_id)
        .order_by(Phase.position, Plan.position, Plan.id)
    ).all()
    plan_keys = {row[0]: row[1] for row in plans}
    rows = s.execute(
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
    for plan_id, key, phase_key, version, held in plans:
        held = held if current(held) else _row_prints(s, plan_id, stored.edges)
        stored.plans[key] = StoredPlan(plan_id, key, phase_key, version, held, by_plan.get(key, []))
    return stored


def _still_held(s: Session, held: Stored | None) -> Stored | None:
    """``held`` with its tasks' states read anew, if no submit changed its initiative since it
    was read (only a submit adds or changes phases, plans, tasks and edges)."""
    if held is None:
        return None
    revision = s.scalar(select(Initiative.revision).where(Initiative.id == held.initiative_id))
    if revision != held.revision:
        return None
    rows = s.execute(
        select(Task.key, Task.state, Task.attempt).where(Task.initiative_id == held.initiative_id)
    ).all()
    if {key for key, _state, _attempt in rows} != set(held.tasks):
        return None
    tasks = {
        key: replace(held.tasks[key], state=state, attempt=attempt) for key, state, attempt in rows
    }
    return replace(held, tasks=tasks)


def _stored_edges(
    s: Session, initiative_id: int, tasks: dict[str, StoredTask]
) -> set[tuple[str, str]]:
    keys = {task.id: task.key for task in tasks.values()}
    rows = s.execute(
        select(TaskDependency.task_id, TaskDependency.depends_on_id)
        .join(Task, Task.id == TaskDependency.task_id)
        .where(Task.initiative_id == initiative_id)
    ).all()
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


def _update_plan(s: Session, plan: PlanSpec, stored: Stored, now: float) -> None:
    """Keep the plan's content as its previous version; update the plan and its tasks."""
    held = stored.plans[plan.key]
    # Lock its tasks: a claim waits for this update, and one made just before is seen here.
    rows = s.execute(
        select(Task.state, Task.attempt).where(Task.plan_id == held.id).with_for_update()
    ).all()
    if any(state not in UNSTARTED or attempt > 0 for state, attempt in rows):
        raise UsageError(f"plan {plan.key}: a task of it started just now; nothing stored")
    content = _plan_content(s, held.id, stored.edges)
    s.add(PlanVersion(plan_id=held.id, version=held.version, content=content, replaced_at=now))
    values = {**_plan_values(plan), "version": held.version + 1}
    s.execute(update(Plan).where(Plan.id == held.id).values(**values))
    on_disk = {t.key: t for t in plan.tasks}
    gone = [stored.tasks[k].id for k in held.tasks if k not in on_disk]
    if gone:
        edges = or_(TaskDependency.task_id.in_(gone), TaskDependency.depends_on_id.in_(gone))
        s.execute(delete(TaskDependency).where(edges))
        s.execute(delete(Task).where(Task.id.in_(gone)))
    for key in held.tasks:
        if key in on_disk:
            task_id = stored.tasks[key].id
            s.execute(update(Task).where(Task.id == task_id).values(**_task_values(on_disk[key])))


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


def _plan_row(
    plan: Plan, phase: str, phase_name: str, initiative: str, source: str, states: dict[str, int]
) -> dict[str, Any]:
    return {
        "id": plan.id,
        "initiative": initiative,
        "phase": phase,
        "phase_name": phase_name,
        "plan": plan.key,
        "name": plan.name,
        "version": plan.version,
        "source": str(plan.extra.get("plan_file") or source),
        "tasks": sum(states.values()),
        "done": states.get(S.DONE.value, 0),
        "states": states,
        "state": rollup(list(states)),
    }


def _version_row(version: PlanVersion) -> dict[str, Any]:
    content = version.content
    return {
        "version": version.version,
        "replaced_at": version.replaced_at,
        "source": str(content.get("extra", {}).get("plan_file", "")),
        "tasks": [task["key"] for task in content.get("tasks", [])],
        "content": content,
    }


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


def _new_task(
    initiative_id: int, plan_id: int, position: int, spec: TaskSpec, now: float, height: int
) -> Task:
    return Task(
        initiative_id=initiative_id,
        plan_id=plan_id,
        key=spec.key,
        height=height,
        position=position,
        state=S.PENDING,
        state_changed_at=now,
        created_at=now,
        **_task_values(spec),
    )


def _task_values(spec: TaskSpec) -> dict[str, Any]:
    """The columns a task's plan decides (and a plan updated in place changes)."""
    extra = dict(spec.extra)
    priority = extra.get("priority", 0)
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


def _bounce_reason(report: MergeReport) -> str:
    if report.rejected:
        return f"verify failed: `{report.verify_command}` exited {report.verify_exit_code}"
    return "merge conflict in " + ", ".join(report.conflict_files)


def _bounce_output(report: MergeReport) -> str:
    return (report.verify_output if report.rejected else report.output) or ""


def _question(task_id: int, agent_id: int | None, question: dict[str, Any]) -> Message:
    options = question.get("options")
    return Message(
        task_id=task_id,
        agent_id=agent_id,
        author="agent",
        body=str(question.get("text") or ""),
        options=[_option_text(o) for o in options] if isinstance(options, list) else [],
        multi_select=bool(question.get("multi_select")),
        extra_id=str(question.get("id") or ""),
        created_at=time.time(),
    )


def _checked_answer(message: Message, task: Task, answer: str) -> str:
    """The answer as recorded (an option's text when it names one); UsageError if unusable."""
    where = f"message {message.id}"
    if message.state != "pending":
        raise UsageError(
            f"{where} was already answered ({message.answer!r}); see `cw message show {message.id}`"
        )
    said = answer.strip()
    if not said:
        raise UsageError(f"{where}: the answer is empty; say what you decide")
    declared = task.extra.get("options") if message.author == "checkpoint" else None
    options = answers.options_of(list(message.options), declared)
    chosen = answers.choose(options, said, multi=message.multi_select)
    if chosen:
        return ", ".join(o.text for o in chosen)
    if options and message.author == "checkpoint" and task.kind == DECISION:
        raise UsageError(f"{where}: answer with one of the options: {answers.listing(options)}")
    return said


def _message_query() -> Any:
    return (
        select(
            Message.id, Message.task_id, Task.key.label("task"), Agent.name.label("agent"),
            Message.author, Message.body, Message.options, Message.multi_select, Message.state,
            Message.answer, Message.thread_id, Message.extra_id, Message.created_at,
            Message.answered_at, Task.name.label("task_name"), Task.state.label("task_state"),
        )
        .join(Task, Task.id == Message.task_id)
        .outerjoin(Agent, Agent.id == Message.agent_id)
    )  # fmt: skip


def _message_row(row: Any, *, detail: bool) -> dict[str, Any]:
    out = dict(row)
    task_name, task_state = out.pop("task_name"), out.pop("task_state")
    if detail:
        out["task_name"], out["task_state"] = task_name, task_state.value
    return out


def _plan_costs(s: Session) -> Any:
    return (
        select(Task.plan_id, func.coalesce(func.sum(AgentRun.cost_usd), 0.0).label("spent"))
        .join(AgentRun, AgentRun.task_id == Task.id)
        .group_by(Task.plan_id)
        .subquery()
    )


def _budget_rows(s: Session) -> list[dict[str, Any]]:
    costs = _plan_costs(s)
    spent = func.coalesce(func.sum(costs.c.spent), 0.0)
    plans = s.execute(
        select(Plan.id, Plan.key, Plan.budget_usd, spent)
        .outerjoin(costs, costs.c.plan_id == Plan.id)
        .where(Plan.budget_usd.is_not(None))
        .group_by(Plan.id)
    ).all()
    initiatives = s.execute(
        select(Initiative.id, Initiative.name, Initiative.budget_usd, spent)
        .join(Phase, Phase.initiative_id == Initiative.id)
        .join(Plan, Plan.phase_id == Phase.id)
        .outerjoin(costs, costs.c.plan_id == Plan.id)
        .where(Initiative.budget_usd.is_not(None))
        .group_by(Initiative.id)
    ).all()
    rows = [{"kind": "plan", "id": i, "name": k, "budget_usd": b, "spent_usd": sp}
            for i, k, b, sp in plans]  # fmt: skip
    rows += [{"kind": "initiative", "id": i, "name": n, "budget_usd": b, "spent_usd": sp}
             for i, n, b, sp in initiatives]  # fmt: skip
    for row in rows:
        row["exhausted"] = row["spent_usd"] >= row["budget_usd"]
    return rows


def _over_budget_plans(s: Session) -> list[int]:
    """Plans where no new work may start: their budget, or their initiative's, is spent."""
    rows = _budget_rows(s)
    plans = {r["id"] for r in rows if r["kind"] == "plan" and r["exhausted"]}
    spent_initiatives = [r["id"] for r in rows if r["kind"] == "initiative" and r["exhausted"]]
    if spent_initiatives:
        plans.update(
            s.scalars(
                select(Plan.id)
                .join(Phase, Phase.id == Plan.phase_id)
                .where(Phase.initiative_id.in_(spent_initiatives))
            )
        )
    return sorted(plans)


def _keys_not_done(s: Session, task_id: int) -> list[str]:
    dep = aliased(Task)
    return list(
        s.scalars(
            select(dep.key)
            .join(TaskDependency, TaskDependency.depends_on_id == dep.id)
            .where(TaskDependency.task_id == task_id, dep.state != S.DONE)
        )
    )


def _option_text(option: Any) -> str:
    """A checkpoint option as a person reads it: ``id: name``."""
    if isinstance(option, dict):
        label = option.get("name") or option.get("text") or ""
        return f"{option.get('id', '?')}: {label}".strip()
    return str(option)


@functools.cache
def _promotable() -> Select[Any]:
    """Pending tasks none of whose dependencies is unfinished (built once: aliasing is slow)."""
    dep = aliased(Task)
    unmerged = (
        select(TaskDependency.task_id)
        .join(dep, dep.id == TaskDependency.depends_on_id)
        .where(dep.state != S.DONE)
    )
    return select(Task.id).where(Task.state == S.PENDING, Task.id.not_in(unmerged))


@functools.cache
def _dependents_of() -> Select[Any]:
    return select(TaskDependency.task_id).where(TaskDependency.depends_on_id == bindparam("after"))


def _has_bad_dependency(s: Session, task_id: int) -> bool:
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


def _lock_task(s: Session, task_id: int) -> Task | None:
    """The task, its row locked until the transaction ends (a no-op lock on SQLite)."""
    return s.get(Task, task_id, with_for_update=True, populate_existing=True)


def _running_attempt(s: Session, claim: Claim) -> bool:
    task = s.get(Task, claim.task_id)
    return task is not None and task.state == S.RUNNING and task.attempt == claim.attempt


def _session_cost(s: Session, agent: Agent) -> float:
    """The recorded cost of the runs in the agent's current session."""
    if agent.session_id is None:
        return 0.0
    cost = s.scalar(
        select(func.sum(AgentRun.cost_usd)).where(
            AgentRun.task_id == agent.task_id, AgentRun.session_id == agent.session_id
        )
    )
    return float(cost or 0.0)


def _workspace(
    s: Session,
    claim: Claim,
    previous: tuple[str, int | None] | None,
    heard: list[dict[str, Any]],
) -> Workspace:
    task = s.get_one(Task, claim.task_id)
    agent = s.scalars(select(Agent).where(Agent.task_id == claim.task_id)).one()
    return Workspace(
        task_id=task.id,
        key=task.key,
        name=task.name,
        prompt=task.prompt,
        files=list(task.files),
        verify=task.verify,
        check=(task.extra or {}).get("verify_text"),
        done_criteria=task.done_criteria,
        plan_objective=task.plan.objective,
        plan_context=task.plan.context,
        attempt=claim.attempt,
        agent_id=agent.id,
        agent_name=agent.name,
        session_id=agent.session_id,
        branch=task.branch,
        worktree=task.worktree,
        base_sha=task.base_sha,
        session_cost_usd=_session_cost(s, agent),
        bounce=dict(task.bounce or {}),
        previous=previous,
        answers=heard,
        **_new_session(s, task, agent),
    )


def _new_session(s: Session, task: Task, agent: Agent) -> dict[str, Any]:
    """The id a new conversation of this agent starts with: derived from the district's own
    random id, so a district made again in the same repository never meets an old session."""
    if agent.session_id is not None:
        return {}
    district = s.scalar(select(District.uid))
    session_id = str(uuid.uuid5(SESSION_NAMESPACE, f"{district}:{task.id}:{agent.name}"))
    known = s.scalar(
        select(func.count(AgentRun.id)).where(
            AgentRun.task_id == task.id, AgentRun.session_id == session_id
        )
    )
    return {"new_session_id": session_id, "new_session_known": bool(known)}


def _keys(s: Session, want: Any, where: Any, task_id: int) -> list[str]:
    ids = select(want).where(where == task_id)
    return list(s.scalars(select(Task.key).where(Task.id.in_(ids)).order_by(Task.position)))


def _rows(s: Session, stmt: Any) -> list[dict[str, Any]]:
    return [
        {c.name: getattr(row, c.name) for c in row.__table__.columns}
        for row in s.scalars(stmt).all()
    ]


def _chunks(items: list[int], size: int) -> Iterator[list[int]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
