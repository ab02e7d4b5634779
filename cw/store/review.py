"""Review before merge: a person approves finished work into the merge queue, or rejects it
with feedback for the same agent; the review mode of plans and initiatives."""

from __future__ import annotations

import time

from sqlalchemy import select
from sqlalchemy.orm import Session

from cw.errors import UsageError
from cw.store.base import StoreBase, labelled, named_row, queue_merge
from cw.store.models import Agent, AgentRun, Message, Plan, Task
from cw.store.read import ReviewListing
from cw.store.records import APPROVE, REJECTED, REVIEW_AUTHOR, Bounce, Claim, ReviewCheck, S, Scope

#: What ``cw review mode`` takes: a mode, or ``inherit`` to drop a plan's or initiative's own.


class Reviews(StoreBase):
    """Review before merge: approve, reject, the review mode, what waits for review."""

    def approve(self, task_id: int) -> Claim:
        """review -> merging; the claim whose merge message is to be sent."""
        with self._write() as s:
            task = named_row(s, Task, task_id)
            if not self._move(s, task_id, [S.REVIEW], S.MERGING, of_attempt=task.attempt):
                raise UsageError(_not_in_review(task))
            queue_merge(s, task_id, task.attempt)
            self._event(s, "review.approved", task_id, task.attempt)
            self._settle_notice(s, task_id, APPROVE)
            return labelled(s, task_id)

    def reject(self, task_id: int, feedback: str) -> None:
        """review -> ready: the next attempt resumes the agent's session with ``feedback``."""
        if not feedback.strip():
            raise UsageError("a rejection needs feedback for the agent: -m 'what to change'")
        with self._write() as s:
            task = named_row(s, Task, task_id)
            bounce = Bounce(REJECTED, feedback=feedback.strip()).to_json()
            moved = self._move(
                s,
                task_id,
                [S.REVIEW],
                S.READY,
                of_attempt=task.attempt,
                bounce=bounce,
                review_check=None,
                last_error=None,
            )
            if not moved:
                raise UsageError(_not_in_review(task))
            self._event(s, "review.rejected", task_id, task.attempt, feedback.strip())
            self._settle_notice(s, task_id, feedback.strip())

    def _settle_notice(self, s: Session, task_id: int, answer: str) -> None:
        notices = s.scalars(
            select(Message).where(
                Message.task_id == task_id,
                Message.author == REVIEW_AUTHOR,
                Message.state == "pending",
            )
        ).all()
        for message in notices:
            message.state, message.answer, message.answered_at = "answered", answer, time.time()
            self._message_event(s, "message.answered", message)

    def set_review_mode(self, scope: Scope, mode: str) -> None:
        """A plan's or an initiative's own review mode (``inherit``: the one above it)."""
        with self._write() as s:
            self._set_review_mode(s, scope, mode)

    def review_rows(self) -> list[ReviewListing]:
        """Every task waiting for review, the longest waiting first."""
        with self._read() as s:
            rows = s.execute(
                select(Task, Plan.key, Agent.name, Agent.cost_usd, Agent.tokens, AgentRun.summary)
                .join(Plan, Plan.id == Task.plan_id)
                .join(Agent, Agent.task_id == Task.id)
                .outerjoin(
                    AgentRun,
                    (AgentRun.task_id == Task.id) & (AgentRun.attempt == Task.attempt),
                )
                .where(Task.state == S.REVIEW)
                .order_by(Task.state_changed_at)
            ).all()
            return [
                ReviewListing(
                    id=t.id, key=t.key, name=t.name, plan=plan, agent=agent, attempt=t.attempt,
                    branch=t.branch, worktree=t.worktree, base_sha=t.base_sha, head_sha=t.head_sha,
                    since=t.state_changed_at, cost_usd=cost or 0.0, tokens=tokens or 0,
                    summary=summary, check=ReviewCheck.from_json(t.review_check),
                )
                for t, plan, agent, cost, tokens, summary in rows
            ]  # fmt: skip


def _not_in_review(task: Task) -> str:
    return (
        f"task {task.key} is {task.state.value}: only a task in review can be approved or rejected"
    )
