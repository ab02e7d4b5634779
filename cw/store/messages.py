"""Messages between agents and people: questions, checkpoints, answers, notifications."""

from __future__ import annotations

import time

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from cw.errors import NotFound, UsageError
from cw.store import answers
from cw.store.base import StoreBase, lock_task, named_row
from cw.store.models import Agent, Event, Message, Task, TaskDependency
from cw.store.records import DECISION, HUMAN_ACTION, Bounce, S


class Messages(StoreBase):
    """Messages between agents and people: questions, checkpoints, answers, notifications."""

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
            task = lock_task(s, message.task_id)
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
        bounce = Bounce("review", checkpoint=task.key, question=question, comments=comments)
        for dep_id in reopen:
            self._move(s, dep_id, [S.DONE], S.READY, bounce=bounce.to_json(), last_error=None)
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
            message = named_row(s, Message, message_id)
            message.notified_at = time.time()
            s.add(
                Event(
                    at=message.notified_at,
                    kind="message.notified",
                    task_id=message.task_id,
                    data={"message_id": message_id, "note": outcome},
                )
            )


def _checked_answer(message: Message, task: Task, answer: str) -> str:
    """The answer as recorded (an option's text when it names one); UsageError if unusable."""
    where = f"message {message.id}"
    if message.state == "closed":
        raise UsageError(f"{where} was closed when its task was cancelled; nobody waits for it")
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
