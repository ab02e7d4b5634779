"""What a person does to tasks: retry, cancel, stop, resume, edit, budgets."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from cw.errors import NotFound, UsageError
from cw.states import TaskState
from cw.store import db
from cw.store.base import (
    StoreBase,
    agents_in_flight,
    direct_dependents,
    keys_not_done,
    lock_task,
    named_row,
    over_budget_plans,
)
from cw.store.models import Agent, AgentRun, Message, Plan, Task
from cw.store.records import (
    MACHINERY_RETRIES,
    MERGE_RETRIES,
    NEVER_RAN,
    UNSTARTED,
    Bounce,
    Claim,
    S,
    Scope,
)

#: What a person may give up on: a task not started, or one in a person's hands.
CANCELLABLE = (
    *(S.PENDING, S.READY, S.BLOCKED),
    *(S.FAILED, S.CONFLICT, S.STOPPED, S.REVIEW, S.WAITING),
)


def _why_not_cancel(s: Session, task_id: int) -> str:
    """Why a task in a state not CANCELLABLE cannot be cancelled, and what to do instead."""
    state = named_row(s, Task, task_id).state
    if state in (S.QUEUED, S.RUNNING):
        return "its agent is at work: stop it first (`cw agent stop`), then cancel it"
    if state == S.MERGING:
        return "its work is being merged: it is done or back in your hands shortly"
    return "only a task that is not finished can be cancelled"


class OperatorActions(StoreBase):
    """What a person does to tasks: retry, cancel, stop, resume, edit, budgets."""

    def retry_task(self, task_id: int) -> None:
        """failed -> ready (a new attempt on the same branch), or conflict -> ready (sent back
        to its agent with the conflict to resolve, as a bounce does); unblock what waited on
        it."""
        with self._write() as s:
            task = named_row(s, Task, task_id)
            extra = {
                k: v for k, v in task.extra.items() if k not in (MACHINERY_RETRIES, MERGE_RETRIES)
            }
            values: dict[str, Any] = {"last_error": None, "extra": extra}
            if task.state == S.CONFLICT:
                values["bounce"] = Bounce(
                    kind="conflict", files=list(task.conflict_files), output=task.last_error or ""
                ).to_json()
            if not self._move(s, task_id, [S.FAILED, S.CONFLICT], S.READY, **values):
                raise UsageError(
                    f"task {self._describe(s, task_id)}: only a failed task, or one stopped by a "
                    "merge conflict, can be retried"
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
        """A task not started, or one that waits for a person (failed, in conflict, stopped, in
        review, asking), is cancelled: its branch keeps whatever work it holds, its open
        messages are closed, and everything downstream is blocked."""
        with self._write() as s:
            if not self._move(s, task_id, CANCELLABLE, S.CANCELLED):
                raise UsageError(
                    f"task {self._describe(s, task_id)}: {_why_not_cancel(s, task_id)}"
                )
            self._close_messages(s, task_id)
            self._block_dependents(s, task_id)

    def _close_messages(self, s: Session, task_id: int) -> None:
        """A cancelled task's pending messages are closed: nobody needs to answer them now."""
        for message in s.scalars(
            select(Message).where(Message.task_id == task_id, Message.state == "pending")
        ):
            message.state, message.answered_at = "closed", time.time()
            self._message_event(s, "message.closed", message)

    @staticmethod
    def _describe(s: Session, task_id: int) -> str:
        task = named_row(s, Task, task_id)
        return f"{task.key} is {task.state.value}"

    def _unblock_dependents(self, s: Session, task_id: int) -> None:
        """blocked -> pending downstream of a retried task, then promote what became ready."""
        self._unblock(s, direct_dependents(s, task_id))
        self._promote(s)

    def request_stop(self, task_id: int) -> tuple[TaskState, str | None, int | None]:
        """Ask the running agent of a task to stop (a queued one stops at once).

        Returns the task's state and, for a running agent, its host and process group so
        the caller may signal it directly; the worker notices the request at its heartbeat.
        """
        with self._write() as s:
            if self._move(s, task_id, [S.QUEUED], S.STOPPED):
                return S.STOPPED, None, None
            task = lock_task(s, task_id)
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
                    f"task {self._describe(s, task_id)}: only a stopped or failed agent can be "
                    "resumed"
                )

    def make_ready(self, task_id: int) -> None:
        """For ``cw agent spawn``: the task must be ready (all its dependencies merged)."""
        with self._write() as s:
            self._promote(s)
            task = named_row(s, Task, task_id)
            if task.state == S.READY:
                return
            waits = keys_not_done(s, task_id)
            why = f"; it waits on {', '.join(waits)}" if waits else ""
            raise UsageError(f"task {self._describe(s, task_id)}: cannot start it now{why}")

    def claim_task(self, task_id: int, cap: int | None = None) -> Claim:
        """Claim one ready task (``cw agent spawn``), ahead of everything else; refused when
        ``cap`` agents already run (max_running)."""
        with self._write() as s:
            db.serialize(s, "claim")
            kind = s.scalar(select(Task.kind).where(Task.id == task_id))
            if kind and kind.startswith("checkpoint"):
                raise UsageError(
                    f"task {self._describe(s, task_id)}: a checkpoint waits for a person"
                )
            if cap is not None and agents_in_flight(s) >= cap:
                raise UsageError(
                    f"task {self._describe(s, task_id)}: {cap} agents already run, as many as "
                    "max_running allows; the task stays ready and starts in its turn"
                )
            if s.scalar(select(Task.plan_id).where(Task.id == task_id)) in over_budget_plans(s):
                raise UsageError(
                    f"task {self._describe(s, task_id)}: the budget of its plan or initiative "
                    "is spent (cw budget list); raise it (cw budget set) to start the task"
                )
            claim = self._claim(s, task_id)
            if claim is None:
                raise UsageError(f"task {self._describe(s, task_id)}: it is not ready")
            return claim

    def task_state(self, task_id: int) -> TaskState:
        with self._read() as s:
            return named_row(s, Task, task_id).state

    def ready_in(self, task_id: int) -> float | None:
        """Seconds until a ready task may be claimed again (0: now): one sent back to wait out
        a pause (cw's machinery failing, a usage limit); None when it is not ready."""
        with self._read() as s:
            row = s.execute(
                select(Task.state, Task.not_before).where(Task.id == task_id)
            ).one_or_none()
        if row is None or row.state != TaskState.READY:
            return None
        return max((row.not_before or 0.0) - time.time(), 0.0)

    def agent_of(self, task_id: int) -> str | None:
        with self._read() as s:
            return s.scalar(select(Agent.name).where(Agent.task_id == task_id))

    def agent_task_id(self, name: str) -> int:
        with self._read() as s:
            task_id = s.scalar(select(Agent.task_id).where(Agent.name == name))
        if task_id is None:
            raise NotFound(f"no agent {name!r}: see `cw agent list`")
        return task_id

    def set_budget(
        self, scope: Scope, *, usd: float | None = None, tokens: int | None = None
    ) -> None:
        """Cap the cost of a plan or an initiative, in dollars, in tokens or both (a cap not
        given stays as it was); no new work starts there once one is spent."""
        with self._write() as s:
            self._set_caps(s, scope, usd, tokens)

    def remove_budget(self, scope: Scope, *, usd: bool, tokens: bool) -> None:
        """Take a plan's or an initiative's cap in dollars, in tokens or both away."""
        caps = {"budget_usd": usd, "budget_tokens": tokens}
        with self._write() as s:
            self._set_on_scope(s, scope, "budget.removed", **dict.fromkeys(filter(caps.get, caps)))

    def cancel_plan(self, plan_id: int) -> int:
        """Cancel every task of a plan none of whose tasks has started; what depends on them is
        blocked. Returns how many tasks were cancelled."""
        with self._write() as s:
            plan = named_row(s, Plan, plan_id)
            tasks = s.scalars(select(Task).where(Task.plan_id == plan_id)).all()
            started = [t for t in tasks if t.state not in NEVER_RAN or t.attempt > 0]
            if started:
                raise UsageError(
                    f"plan {plan.key}: task {started[0].key} is {started[0].state.value}: only a "
                    "plan none of whose tasks has started can be cancelled (cw task cancel "
                    "cancels one task, or gives it up)"
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
