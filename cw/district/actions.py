"""The operator actions: each one change through the store, then whatever it lets start is sent."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

from celery import Celery
from kombu.exceptions import OperationalError as BrokerTrouble

from cw.errors import BrokerError, CwError, NotSent, UsageError
from cw.git import worktrees
from cw.host import processes, runmarks
from cw.settings import Settings
from cw.states import TaskState
from cw.store import Claim, Store, TransientDatabaseError
from cw.store.answers import is_approval
from cw.store.records import REVIEW_AUTHOR, Scope
from cw.transport.celeryapp import connected_app, make_app
from cw.transport.dispatch import dispatch_ready, send, send_merge

STOP_POLL_SECONDS = 0.2


class District:
    """A person's actions on one district.

    ``dispatch`` runs after an action that may let work start (an answer, a retry, a resume);
    by default it claims and sends every ready task at once, raising when the broker cannot be
    reached. The file-system UI passes its own, which logs instead, and None sends nothing.
    ``connect`` makes the Celery app once the broker answers (the web page bounds how long).
    Once an action's change is made, a failure to send what it lets start is :class:`NotSent`.
    """

    def __init__(
        self,
        settings: Settings,
        store: Store,
        dispatch: Callable[[], object] | None = None,
        connect: Callable[[Settings], Celery] = connected_app,
    ) -> None:
        self.settings = settings
        self.store = store
        self._connect = connect
        self._dispatch = self._dispatch_ready if dispatch is None else dispatch

    @classmethod
    def open(cls, settings: Settings) -> District:
        """The district of ``settings`` (initialized), sending work as actions let it start."""
        return cls(settings, Store.open(settings.require_database().db_url))

    def _dispatch_ready(self) -> list[Claim]:
        return dispatch_ready(self.store, self._connect(self.settings), self.settings)

    def _send_after(self, send: Callable[[], object]) -> None:
        """``send`` what a change made (committed already) lets start; its failure is NotSent."""
        try:
            send()
        except (BrokerError, BrokerTrouble) as exc:
            raise NotSent(str(exc)) from exc
        except TransientDatabaseError as exc:
            raise NotSent(f"the work it lets start waits: the database was busy ({exc})") from exc

    # -- messages ------------------------------------------------------------------------

    def answer(self, message_id: int, text: str) -> str:
        """Answer a message; one line saying what it did (a task resumed, work sent back).
        The answer to a review's message approves (``approve``, ``lgtm``, ``ok``, ``yes``: the
        words a checkpoint takes as approval) or rejects with the answer as feedback."""
        message = self.store.message_detail(message_id)
        if message.author == REVIEW_AUTHOR and message.state == "pending":
            return self._review_answer(message.task_id, message.task, text)
        said = self.store.answer_message(message_id, text)
        self._send_after(self._dispatch)
        return said

    # -- usage limits ----------------------------------------------------------------------

    def resume_limits(self, adapter: str | None = None) -> list[str]:
        """Lift the usage-limit pauses in force (of ``adapter``, or all) and start the tasks
        they held; the adapters resumed."""
        lifted = self.store.lift_pauses(adapter)
        if lifted:
            self._send_after(self._dispatch)
        return lifted

    # -- tasks ---------------------------------------------------------------------------

    def retry(self, task_id: int) -> TaskState:
        """A failed task gets a new attempt on its branch; its state once dispatched."""
        self.store.retry_task(task_id)
        self._send_after(self._dispatch)
        return self.store.task_state(task_id)

    def cancel(self, task_id: int) -> None:
        """Cancel a task not started, or give up one in a person's hands (failed, conflict,
        stopped, review, waiting): its branch keeps its work; what depends on it is blocked."""
        self.store.cancel_task(task_id)

    def cancel_plan(self, plan_id: int) -> int:
        """Cancel a plan none of whose tasks has started; how many tasks were cancelled."""
        return self.store.cancel_plan(plan_id)

    def edit(self, task_id: int, *, prompt: str | None = None, priority: int | None = None) -> None:
        """Change the prompt or the priority of a task that has not started."""
        self.store.edit_task(task_id, prompt=prompt, priority=priority)

    def set_budget(
        self, scope: Scope, *, usd: float | None = None, tokens: int | None = None
    ) -> None:
        """Cap what a plan or an initiative may cost, in dollars, tokens or both; work a
        raised cap lets start again is sent at once."""
        self._change_budget(scope, lambda: self.store.set_budget(scope, usd=usd, tokens=tokens))

    def remove_budget(self, scope: Scope, *, usd: bool = True, tokens: bool = True) -> None:
        """Take a plan's or an initiative's caps away; the work that frees is sent at once."""
        self._change_budget(scope, lambda: self.store.remove_budget(scope, usd=usd, tokens=tokens))

    def _change_budget(self, scope: Scope, change: Callable[[], None]) -> None:
        held = self.store.over_budget()
        change()
        if held - self.store.over_budget():
            try:
                self._dispatch()
            except CwError as exc:  # the cap holds: say so beside why nothing was sent
                said = f"budget of {scope.name} changed, but the work it frees waits: {exc}"
                raise CwError(said) from exc

    # -- review --------------------------------------------------------------------------

    def approve(self, task_id: int) -> None:
        """Approve work waiting for review: into the merge queue; on merge it is done."""
        self._refuse_uncommitted(task_id)
        claim = self.store.approve(task_id)
        self._send_after(lambda: send_merge(self._connect(self.settings), claim))

    def _refuse_uncommitted(self, task_id: int) -> None:
        """A person's edits in the worktree of work in review: the merge takes the branch,
        so they would be left out of the integration branch, without a word."""
        task = self.store.task_detail(task_id)
        here = bool(task.runs) and task.runs[-1].host == self.settings.hostname
        if task.state != TaskState.REVIEW or not here or not os.path.isdir(task.worktree or ""):
            return  # not in review (the store says so), or its worktree on another host
        changed = worktrees.changed_tracked_files(Path(str(task.worktree)))
        if changed:
            raise UsageError(
                f"task {task.key}: {len(changed)} file(s) changed in its worktree "
                f"{task.worktree} are not committed ({changed[0]}): commit them to merge them "
                "with the work (or discard them), then approve"
            )

    def reject(self, task_id: int, feedback: str) -> None:
        """Send work waiting for review back to its agent with ``feedback``: a new attempt
        resumes the same session in the same worktree."""
        self.store.reject(task_id, feedback)
        self._send_after(self._dispatch)

    def _review_answer(self, task_id: int, key: str, text: str) -> str:
        if is_approval(text):
            self.approve(task_id)
            return f"task {key} approved: queued for merge"
        self.reject(task_id, text)
        return f"task {key} sent back to its agent with your feedback"

    def set_review_mode(self, scope: Scope, mode: str) -> None:
        """A plan's or an initiative's own review mode (auto, manual, or inherit)."""
        self.store.set_review_mode(scope, mode)

    # -- agents --------------------------------------------------------------------------

    def spawn(self, task_id: int) -> Claim:
        """Start an agent on a ready task now, ahead of everything else."""
        self.store.make_ready(task_id)
        claim = self.store.claim_task(task_id, cap=self.settings.running_cap)
        send(make_app(self.settings), [claim])
        return claim

    def stop(self, task_id: int, timeout: float) -> TaskState:
        """Stop a task's agent (its work is committed on its branch) and wait until it has;
        the task's state then: ``stopped``, or what it finished as first."""
        state, host, pid = self.store.request_stop(task_id)
        if state == TaskState.STOPPED:
            return state
        if host == self.settings.hostname and pid:
            # Same machine: signal at once instead of waiting for the worker's next heartbeat,
            # if the group is still this task's agent (after a reboot, the pid is another's).
            run = runmarks.agent_runs(self.settings.state_dir).get(pid)
            if run is not None and run.task_id == task_id:
                processes.signal_group(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while (state := self.store.task_state(task_id)) == TaskState.RUNNING:
            if time.monotonic() > deadline:
                raise CwError(
                    f"the agent did not stop within {timeout:.0f} s; it is still asked to"
                )
            time.sleep(STOP_POLL_SECONDS)
        return state

    def resume(self, task_id: int) -> None:
        """Continue a stopped task's agent in its own session (a failed one is retried)."""
        if self.store.task_state(task_id) == TaskState.FAILED:
            self.store.retry_task(task_id)
        else:
            self.store.resume_task(task_id)
        self._send_after(self._dispatch)

    def restart(self, task_id: int, timeout: float) -> TaskState | None:
        """Stop the agent if it runs or is about to, then resume it; the stop's outcome."""
        stopped = None
        if self.store.task_state(task_id) in (TaskState.RUNNING, TaskState.QUEUED):
            stopped = self.stop(task_id, timeout)
        self.resume(task_id)
        return stopped
