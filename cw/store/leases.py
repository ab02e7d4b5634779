"""An attempt's lease: renewed by its heartbeats; once it expires, the run is taken over or lost.

A worker that stops renewing its lease (it died, stalled, or lost the database) loses its
attempt: a redelivered message takes the run over as the next attempt (:meth:`_take_over`), or
the reconciler sends the task back (:meth:`_lose`). Either way a stop a person asked of its
agent holds: the task is left ``stopped``, and nothing runs it again.
"""

from __future__ import annotations

import time

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from cw.errors import LeaseHeld
from cw.store.base import StoreBase, lock_task
from cw.store.models import Agent, AgentRun, Task
from cw.store.records import Claim, S


class Leases(StoreBase):
    """An attempt's lease: renewed by its heartbeats; once it expires, taken over or lost."""

    def record_heartbeat(self, claim: Claim, lease_seconds: float, pid: int | None = None) -> bool:
        """Extend the lease; False when the agent must stop (lost its task, or a stop request)."""
        with self._write() as s:
            now = time.time()
            task = lock_task(s, claim.task_id)  # the reconciler may be releasing it
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

    def running_attempts(self) -> set[tuple[str, int, int]]:
        """(host, task id, attempt) of every running attempt: the agents there may be."""
        with self._read() as s:
            rows = s.execute(
                select(AgentRun.host, AgentRun.task_id, AgentRun.attempt).where(
                    AgentRun.state == "running"
                )
            ).all()
            return {(host or "", task_id, attempt) for host, task_id, attempt in rows}

    def _take_over(
        self, s: Session, task: Task, old: AgentRun, worker: str, now: float
    ) -> tuple[Claim, AgentRun] | None:
        """The run of a worker that stopped renewing its lease goes on as the next attempt, so
        the attempt number fences that worker out should it wake (a stalled process, a
        suspended machine): its heartbeat and its result find the task under another attempt.

        Raises :class:`LeaseHeld` while the lease runs. None when a person asked its agent to
        stop: the run is lost and the task stopped, as the reconciler leaves it (:meth:`_lose`).
        """
        if old.lease_expires_at >= now:
            raise LeaseHeld(old.lease_expires_at - now)
        if task.stop_requested_at is not None:
            self._lose(
                s,
                old,
                now,
                f"lost: worker {old.worker or '?'} let its lease expire after its agent was "
                f"asked to stop; {worker}, given its message again, left the task stopped",
            )
            return None
        old.state, old.finished_at = "lost", now
        old.error = f"taken over by {worker}: worker {old.worker or '?'} let its lease expire"
        self._event(s, "attempt.taken_over", task.id, old.attempt, old.worker)
        task.attempt = old.attempt + 1
        run = AgentRun(task_id=task.id, agent_id=old.agent_id, attempt=task.attempt)
        s.add(run)
        return Claim(task.id, task.attempt), run

    def _lose(self, s: Session, run: AgentRun, now: float, error: str) -> bool:
        """The run's worker let its lease expire: the run is ``lost`` (event ``attempt.lost``,
        ``error`` in the run) and its task goes running -> ready, where the next claim starts
        a new attempt that resumes the session; or running -> stopped where a person had asked
        its agent to stop: the stop holds, no other worker runs it. False if the task moved
        first (compare-and-set on the state and the run's attempt)."""
        asked = s.scalar(select(Task.stop_requested_at).where(Task.id == run.task_id))
        then = S.READY if asked is None else S.STOPPED
        if not self._move(s, run.task_id, [S.RUNNING], then, of_attempt=run.attempt):
            return False
        run.state, run.finished_at, run.error = "lost", now, error
        self._event(s, "attempt.lost", run.task_id, run.attempt, run.worker)
        return True
