"""An attempt's life in the database: started (its lease in :mod:`cw.store.leases`), its
workspace and session, its result; cw's machinery failing around it."""

from __future__ import annotations

import time
import uuid
from dataclasses import asdict
from typing import Any

from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session, aliased

from cw.defaults import SESSION_NAMESPACE
from cw.store.base import decisions_upstream, lock_task, over_budget_plans, queue_merge
from cw.store.leases import Leases
from cw.store.limits import Limits
from cw.store.models import (
    Agent,
    AgentRun,
    District,
    Event,
    Initiative,
    Message,
    Task,
)
from cw.store.records import (
    APPROVE,
    HEARD_BY,
    MACHINERY_RETRIES,
    NO_QUESTION,
    OUTCOMES,
    REVIEW_AUTHOR,
    Answer,
    AttemptResult,
    Bounce,
    Claim,
    Question,
    S,
    TaskBrief,
    Tokens,
    Workspace,
    machinery_backoff,
    machinery_gave_up,
)

#: Facts of a run its row does not take as they are: the session only when one is known, the
#: questions as messages.
_NOT_RUN_COLUMNS = ("session_id", "questions")


class Attempts(Leases, Limits):
    """An attempt's life in the database: started, its workspace and session, its result."""

    def start_attempt(
        self, claim: Claim, *, worker: str, host: str, lease_seconds: float
    ) -> Workspace | None:
        """queued -> running for this attempt, with a lease; None if the attempt is not ours.

        A redelivered message of a running attempt takes over once the old lease expires
        (raises :class:`LeaseHeld` before that), as the next attempt: ``Workspace.attempt``
        is the one to go on with. The old agent's host and pid come back in
        ``Workspace.previous`` so the caller can make sure that process is gone. If a person
        asked the old agent to stop, the stop holds: the run is lost and the task stopped, as
        the reconciler leaves it, and None comes back.
        """
        with self._write() as s:
            task = lock_task(s, claim.task_id)  # two deliveries of one attempt take over in turn
            now = time.time()
            run = s.scalar(
                select(AgentRun).where(
                    AgentRun.task_id == claim.task_id, AgentRun.attempt == claim.attempt
                )
            )
            previous: tuple[str, int | None] | None = None
            if self._held_by_budget(s, claim, task):
                return None
            if self._move(s, claim.task_id, [S.QUEUED], S.RUNNING, of_attempt=claim.attempt):
                agent_id = s.scalar(select(Agent.id).where(Agent.task_id == claim.task_id))
                assert agent_id is not None
                previous = self._lost_before(s, claim)
                run = AgentRun(task_id=claim.task_id, agent_id=agent_id, attempt=claim.attempt)
                s.add(run)
            elif _running_attempt(s, claim) and run is not None:
                assert task is not None
                previous = (run.host, run.pid)
                taken = self._take_over(s, task, run, worker, now)
                if taken is None:
                    return None  # its agent was asked to stop: the stop holds
                claim, run = taken
            else:
                return None
            run.state, run.worker, run.host, run.pid = "running", worker, host, None
            if task is not None and run.worktree is None:
                run.worktree = task.worktree  # its worktree, unless it makes one elsewhere
            run.started_at = run.heartbeat_at = now
            run.lease_expires_at = now + lease_seconds
            s.flush()
            workspace = _workspace(s, claim, previous, self._deliver_answers(s, claim))
            run.session_id = workspace.session_id or workspace.new_session_id
            return workspace

    def _held_by_budget(self, s: Session, claim: Claim, task: Task | None) -> bool:
        """A queued task whose plan's or initiative's budget was spent after it was sent goes
        back to ready, its attempt not begun: a raised cap sends it again."""
        queued = task is not None and task.state == S.QUEUED and task.attempt == claim.attempt
        if not queued or task is None or task.plan_id not in over_budget_plans(s):
            return False
        return self._move(
            s,
            claim.task_id,
            [S.QUEUED],
            S.READY,
            of_attempt=claim.attempt,
            attempt=claim.attempt - 1,
            last_error="its budget was spent while it waited for a worker",
        )

    def _deliver_answers(self, s: Session, claim: Claim) -> list[Answer]:
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
            Answer(id=m.extra_id, question=m.body, options=list(m.options), answer=m.answer or "")
            for m in heard
        ]

    def record_workspace(self, task_id: int, branch: str, worktree: str, base_sha: str) -> bool:
        """The task's first workspace; False when one was recorded already (another attempt)."""
        with self._write() as s:
            first = s.execute(
                update(Task)
                .where(Task.id == task_id, Task.branch.is_(None))
                .values(branch=branch, worktree=worktree, base_sha=base_sha)
            )
            s.execute(
                update(AgentRun)
                .where(AgentRun.task_id == task_id, AgentRun.state == "running")
                .values(worktree=worktree)
            )
            return bool(getattr(first, "rowcount", 0))

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

    def record_session(self, claim: Claim, session_id: str) -> None:
        """The agent's session id, read from its output while :meth:`record_heartbeat` may be
        renewing the lease: both lock the task, then the run, then the agent, in that order (in
        the other order the two deadlocked on PostgreSQL and failed the attempt)."""
        with self._write() as s:
            lock_task(s, claim.task_id)
            s.execute(
                update(AgentRun)
                .where(AgentRun.task_id == claim.task_id, AgentRun.attempt == claim.attempt)
                .values(session_id=session_id)
            )
            s.execute(
                update(Agent).where(Agent.task_id == claim.task_id).values(session_id=session_id)
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
        if result.outcome == "review":
            values["review_check"] = asdict(result.review_check) if result.review_check else None
        with self._write() as s:
            if not self._move(
                s, claim.task_id, [S.RUNNING], target, of_attempt=claim.attempt, **values
            ):
                return False
            self._close_run(s, claim, result, adapter)
            if result.exited_at is not None:
                s.add(
                    Event(
                        at=result.exited_at,
                        kind="agent.exited",
                        task_id=claim.task_id,
                        attempt=claim.attempt,
                        data={},
                    )
                )
            self._after_attempt(s, claim, result, adapter)
            return True

    def record_agent_finished(self, claim: Claim, result: AttemptResult) -> bool:
        """The attempt's agent finished its work (event ``agent.finished`` with the result),
        before cw commits it and hands it to the merge: a later attempt, if this one is lost
        first, goes straight to merge instead of running the agent again. False if stale."""
        with self._write() as s:
            task = lock_task(s, claim.task_id)
            if task is None or task.state != S.RUNNING or task.attempt != claim.attempt:
                return False
            s.add(_finished_event(claim, result))
            return True

    def retry_machinery(
        self,
        claim: Claim,
        error: str,
        retries: int,
        pause: float,
        finished: AttemptResult | None = None,
    ) -> bool:
        """cw's machinery (git, the file system) failed the attempt, not its agent: the task goes
        back to ready for a new attempt after ``pause x 2^(n-1)`` seconds (the run is
        ``retried``), ``retries`` times; after that it fails with ``error``. True if retried.
        A task whose agent a person asked to stop is ``stopped`` instead (resumed, it goes on).
        ``finished``: the agent's result, when it finished but recording it failed."""
        with self._write() as s:
            task = lock_task(s, claim.task_id)
            if task is None or task.state != S.RUNNING or task.attempt != claim.attempt:
                return False
            if finished is not None:
                s.add(_finished_event(claim, finished))
            count = int(task.extra.get(MACHINERY_RETRIES, 0)) + 1
            retried = count <= retries
            values: dict[str, Any] = {"last_error": error}
            if retried and task.stop_requested_at is not None:
                # A person asked its agent to stop: the stop holds (a retry would run it again).
                then, run_state = S.STOPPED, "stopped"
            elif retried:
                then, run_state = S.READY, "retried"
                values = {
                    "not_before": time.time() + machinery_backoff(pause, count),
                    "extra": {**task.extra, MACHINERY_RETRIES: count},
                }
            else:
                error = values["last_error"] = machinery_gave_up(error, count)
                then, run_state = S.FAILED, "failed"
            self._move(s, claim.task_id, [S.RUNNING], then, of_attempt=claim.attempt, **values)
            if then == S.FAILED:
                self._block_dependents(s, claim.task_id)
            s.execute(
                update(AgentRun)
                .where(AgentRun.task_id == claim.task_id, AgentRun.attempt == claim.attempt)
                .values(state=run_state, finished_at=time.time(), error=error)
            )
            self._event(
                s,
                f"attempt.{run_state}",
                claim.task_id,
                claim.attempt,
                error,
            )
            return retried

    def _after_attempt(self, s: Session, claim: Claim, result: AttemptResult, adapter: str) -> None:
        if result.outcome == "done":
            queue_merge(s, claim.task_id, claim.attempt)
        elif result.outcome == "failed":
            self._block_dependents(s, claim.task_id)
        elif result.outcome == "rate_limited" and result.not_before is not None:
            reason = result.error or "a usage limit"
            self._pause_adapter(s, adapter, result.not_before, reason, claim.task_id)
        elif result.outcome == "review":
            agent_id = s.scalar(select(Agent.id).where(Agent.task_id == claim.task_id))
            self._add_message(s, _review_notice(s, claim.task_id, agent_id))
        elif result.outcome == "questions":
            agent_id = s.scalar(select(Agent.id).where(Agent.task_id == claim.task_id))
            for question in result.questions or [NO_QUESTION]:
                self._add_message(s, _question(claim.task_id, agent_id, question))

    def _close_run(self, s: Session, claim: Claim, result: AttemptResult, adapter: str) -> None:
        now, tokens = time.time(), Tokens.of(result.usage).total
        s.execute(
            update(AgentRun)
            .where(AgentRun.task_id == claim.task_id, AgentRun.attempt == claim.attempt)
            .values(
                state=OUTCOMES[result.outcome][1],
                finished_at=now,
                tokens=tokens,
                **{k: v for k, v in result.facts().items() if k not in _NOT_RUN_COLUMNS},
                **({"session_id": result.session_id} if result.session_id else {}),
            )
        )
        agent = s.scalars(select(Agent).where(Agent.task_id == claim.task_id)).one()
        agent.adapter = adapter
        agent.last_activity_at = now
        agent.cost_usd += result.cost_usd or 0.0
        agent.tokens += tokens
        agent.session_id = result.session_id or agent.session_id


def _review_notice(s: Session, task_id: int, agent_id: int | None) -> Message:
    """The message that tells a person (and the notification hook) the task waits for review."""
    key = s.get_one(Task, task_id).key
    body = (
        f"Task {key} is finished and its check passed in its worktree: review it "
        f"(`cw review show {key}`). Answer `{APPROVE}` to merge it, or answer with feedback "
        "to send it back to its agent."
    )
    return Message(
        task_id=task_id,
        agent_id=agent_id,
        author=REVIEW_AUTHOR,
        body=body,
        options=[APPROVE],
        created_at=time.time(),
    )


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
    heard: list[Answer],
) -> Workspace:
    task = s.get_one(Task, claim.task_id)
    agent = s.scalars(select(Agent).where(Agent.task_id == claim.task_id)).one()
    return Workspace(
        task_id=task.id,
        brief=_brief(s, task),
        attempt=claim.attempt,
        agent_id=agent.id,
        agent_name=agent.name,
        session_id=agent.session_id,
        branch=task.branch,
        worktree=task.worktree,
        base_sha=task.base_sha,
        session_cost_usd=_session_cost(s, agent),
        bounce=Bounce.from_json(task.bounce),
        review=task.plan.review or s.get_one(Initiative, task.initiative_id).review,
        previous=previous,
        answers=heard,
        **_new_session(s, task, agent),
    )


def _finished_event(claim: Claim, result: AttemptResult) -> Event:
    return Event(
        at=time.time(),
        kind="agent.finished",
        task_id=claim.task_id,
        attempt=claim.attempt,
        data={"result": asdict(result)},
    )


def _brief(s: Session, task: Task) -> TaskBrief:
    return TaskBrief(
        key=task.key,
        name=task.name,
        prompt=task.prompt,
        branch=task.branch or "",
        files=list(task.files),
        verify=task.verify,
        check=(task.extra or {}).get("verify_text"),
        done_criteria=task.done_criteria,
        plan_objective=task.plan.objective,
        plan_context=task.plan.context,
        decisions=decisions_upstream(s, task.id),
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


def _question(task_id: int, agent_id: int | None, question: Question) -> Message:
    return Message(
        task_id=task_id,
        agent_id=agent_id,
        author="agent",
        body=question.text,
        options=list(question.options),
        multi_select=question.multi_select,
        extra_id=question.id,
        created_at=time.time(),
    )
