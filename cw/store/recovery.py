"""Recovery: shutting workers down, lost attempts, lost messages, the broker marker."""

from __future__ import annotations

import time
from collections.abc import Iterable

from sqlalchemy import func, or_, select, update

from cw.states import TaskState
from cw.store.leases import Leases
from cw.store.models import AgentRun, District, Event, Task
from cw.store.records import NO_RESULT, AttemptResult, Claim, S


class Recovery(Leases):
    """Recovery: shutting workers down, lost attempts, lost messages, the broker marker."""

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

    def request_shutdown(self, worker: str, pid: int) -> list[int]:
        """``worker`` is shutting down: its running attempts are to end as interrupted.

        Each running attempt of the worker gets an ``agent.shutdown_requested`` event, which its
        heartbeat reads (:meth:`shutdown_requested`); one that starts after this call finds the
        worker's ``worker.shutting_down`` event (:meth:`worker_shutting_down`). Returns the
        process groups of their agents, so the caller can signal them at once. ``pid``: the
        worker's main process (a worker started later under the same name is another).
        """
        with self._write() as s:
            data = {"note": worker, "pid": pid}
            s.add(Event(at=time.time(), kind="worker.shutting_down", task_id=None, data=data))
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

    def stop_requested(self, claim: Claim) -> bool:
        with self._read() as s:
            at = s.scalar(
                select(Task.stop_requested_at).where(
                    Task.id == claim.task_id, Task.attempt == claim.attempt
                )
            )
            return at is not None

    def still_ours(self, claim: Claim) -> bool:
        """True while the attempt runs as the task's current one: not lost to a takeover,
        not handed on. A stop request does not matter here: the attempt still saves its work."""
        with self._read() as s:
            row = s.execute(
                select(Task.state, Task.attempt).where(Task.id == claim.task_id)
            ).one_or_none()
            return row is not None and tuple(row) == (S.RUNNING, claim.attempt)

    def finished_agent(self, claim: Claim, host: str) -> AttemptResult | None:
        """The result of an earlier agent of the task that finished on ``host`` but whose
        attempt never handed its work on (every attempt since was lost, or failed in cw's
        machinery, all of them on ``host``). One that finished on another host does not count:
        what it left after its last push to the hub is on that host; nor one followed by an
        attempt elsewhere, whose agent may have run and pushed half-done work over it."""
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
            since = s.execute(
                select(AgentRun.attempt, AgentRun.state, AgentRun.host).where(
                    AgentRun.task_id == claim.task_id,
                    AgentRun.attempt >= event.attempt,
                    AgentRun.attempt < claim.attempt,
                )
            ).all()
            if any(r.state not in NO_RESULT for r in since):
                return None
            if any(r.host != host for r in since):  # an agent elsewhere may have run after it
                return None
            return AttemptResult(**event.data["result"])

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

    def worker_shutting_down(self, worker: str, pid: int, since: float) -> bool:
        """True when ``worker``, its main process ``pid``, began shutting down at ``since`` or
        later. The pid tells it from an earlier worker of the same name that stopped moments
        before it started (a process's start time is known to a second at best)."""
        with self._read() as s:
            notes = s.scalars(
                select(Event.data).where(
                    Event.kind == "worker.shutting_down",
                    Event.task_id.is_(None),
                    Event.at >= since,
                )
            ).all()
            return any(note.get("note") == worker and note.get("pid") == pid for note in notes)

    def earliest_lease_expiry(self) -> float | None:
        """When the first lease of a running attempt runs out (None: nothing runs)."""
        with self._read() as s:
            return s.scalar(
                select(func.min(AgentRun.lease_expires_at))
                .join(Task, (Task.id == AgentRun.task_id) & (Task.attempt == AgentRun.attempt))
                .where(Task.state == S.RUNNING, AgentRun.state == "running")
            )

    def release_lost_attempts(self, now: float) -> list[tuple[Claim, tuple[str, int | None]]]:
        """running -> ready for every attempt whose lease expired before ``now`` (-> stopped,
        where a person had asked its agent to stop).

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
                error = (
                    f"lost: its lease expired {now - run.lease_expires_at:.1f} s before the "
                    f"reconciler looked; worker {run.worker or '?'} stopped renewing it"
                )
                if self._lose(s, run, now, error):
                    lost.append((Claim(run.task_id, run.attempt), (run.host, run.pid)))
            return lost

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
