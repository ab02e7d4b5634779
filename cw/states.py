"""The task state machine: one enum, one table of legal moves, one check.

``docs/task-states.md`` draws the same table as a diagram; keep them in step.
"""

from __future__ import annotations

import enum
import re

from cw.errors import StaleState


class TaskState(enum.StrEnum):
    """Where a task is in its life. Only ``store.Store`` changes it."""

    PENDING = "pending"  # some dependency is not merged yet
    READY = "ready"  # every dependency is merged; nobody has claimed it
    QUEUED = "queued"  # a dispatcher claimed it and sent its Celery chain
    RUNNING = "running"  # an agent works on it under a lease
    MERGING = "merging"  # the agent finished; the merge worker owns it
    DONE = "done"  # merged into the integration branch
    WAITING = "waiting"  # a person must answer (a checkpoint or a question); no slot held
    CONFLICT = "conflict"  # the merge hit conflicts; the files are recorded
    FAILED = "failed"  # the agent failed; a person decides
    BLOCKED = "blocked"  # a dependency failed or was cancelled
    CANCELLED = "cancelled"  # a person cancelled it (gave it up)
    STOPPED = "stopped"  # a person stopped its agent; work is on its branch; resumable
    REVIEW = "review"  # done and checked in its worktree; a person approves or rejects it


S = TaskState

#: Every legal move, and who makes it: ``old -> new: who``, one a line (an indented line goes on
#: with the one above). The docs render this table.
_MOVES = """
pending -> ready: whoever merges the last dependency (or submit, for roots)
ready -> pending: a re-submit gives a task that never started a dependency
ready -> queued: dispatcher: claims the task and sends run_agent -> merge
ready -> waiting: dispatcher: a checkpoint task asks its person instead
queued -> running: agent worker: starts the attempt and takes the lease
running -> merging: agent worker: the agent succeeded; work committed
running -> failed: agent worker: the agent failed or timed out, or cw's machinery failed more
    often than it retries
running -> waiting: agent worker: the agent asked questions (messages); no slot held
running -> stopped: agent worker: a person asked for a stop; WIP committed, worktree removed.
    Reconciler: the lease expired after a person asked for a stop (the worker died): the stop
    holds
running -> ready: agent worker: shut down (WIP committed), a usage limit (parked until it
    resets) or a failure of cw's machinery (retried after a back-off); reconciler: the lease
    expired (the worker died). The next attempt resumes the session
queued -> stopped: a person (cw agent stop) before any worker started it
queued -> ready: agent worker: the budget of its plan or initiative was spent while it waited;
    its attempt never began, and a raised cap sends it again
stopped -> ready: a person (cw agent resume / restart): resumes the same session
merging -> done: merge worker: merged into the integration branch
merging -> queued: merge worker: conflicts or a red verify go back to the agent
merging -> ready: merge worker: sent back as to queued, but max_running agents run, or its
    budget is spent: it waits for a slot, or a raised cap
merging -> conflict: merge worker: conflicts, with bouncing off (max_bounces = 0)
merging -> failed: merge worker: bounced too often, or the merge itself failed
running -> review: agent worker: review is manual, the agent succeeded and its verify passed in
    its worktree; no slot held
review -> merging: a person approves it (cw review approve): into the merge queue
review -> ready: a person rejects it with feedback (cw review reject): the same session resumes
    in the same worktree
pending -> blocked: whoever fails or cancels a task this one depends on
blocked -> cancelled: a person (cw task cancel)
pending -> cancelled: a person (cw task cancel)
ready -> cancelled: a person (cw task cancel)
failed -> cancelled: a person gives it up (cw task cancel); its branch keeps its work
conflict -> cancelled: a person gives it up (cw task cancel); its branch keeps its work
stopped -> cancelled: a person gives it up (cw task cancel); its branch keeps its work
review -> cancelled: a person gives it up (cw task cancel); its branch keeps its work
waiting -> cancelled: a person gives it up (cw task cancel); its open messages are closed
failed -> ready: a person (cw task retry): the next attempt resumes the same branch
conflict -> ready: a person (cw task retry): back to its agent with the conflict to resolve, as
    a bounce would
blocked -> pending: cw task retry of what blocked it, or a re-submit dropping it
waiting -> ready: a person answers its agent's last question: the session resumes
waiting -> done: a person approves a checkpoint or picks a decision's option
waiting -> pending: a person's comments on a checkpoint send its dependencies back
done -> ready: a checkpoint's comments reopen a merged task: its agent works again
"""


def _moves(table: str) -> dict[tuple[TaskState, TaskState], str]:
    """The moves ``table`` lists, in its order."""
    moves: dict[tuple[TaskState, TaskState], str] = {}
    for entry in re.split(r"\n(?=\S)", table.strip()):
        move, _, who = entry.partition(": ")
        old, new = move.split(" -> ")
        moves[TaskState(old), TaskState(new)] = " ".join(who.split())
    return moves


TRANSITIONS: dict[tuple[TaskState, TaskState], str] = _moves(_MOVES)

#: States in which the task will not move again without a person.
SETTLED: frozenset[TaskState] = frozenset(
    {S.DONE, S.FAILED, S.CANCELLED, S.CONFLICT, S.BLOCKED, S.STOPPED}
)

#: States in which a worker or the merge worker holds the task.
IN_FLIGHT: frozenset[TaskState] = frozenset({S.QUEUED, S.RUNNING, S.MERGING})


def check_transition(old: TaskState, new: TaskState) -> None:
    """Raise :class:`StaleState` unless ``old -> new`` is a legal move."""
    if (old, new) not in TRANSITIONS:
        raise StaleState(f"a task cannot move from {old} to {new}")
