"""The merge queue as people see it (``cw merge status``) and what one merge integrated
(``cw task diff``).
"""

from __future__ import annotations

import logging
import time
from collections import Counter

from cw.errors import GitError, UsageError
from cw.git import branches
from cw.maintenance.gc import S
from cw.settings import Settings
from cw.states import TaskState
from cw.store import Store
from cw.store.read import (
    Bounce,
    Conflict,
    Failure,
    InProgress,
    Merged,
    MergeRow,
    MergeStatus,
    Queued,
    TaskDetail,
)

logger = logging.getLogger(__name__)


RECENT_MERGES = 10


FAILED_MERGES = frozenset({"failed", "verify_failed"})


def merge_status(store: Store, now: float | None = None) -> MergeStatus:
    """The merge queue: queued (in order), in progress, recently merged, open conflicts and
    failures (the newest merge of a task that still waits on it), and how often tasks bounced."""
    now = time.time() if now is None else now
    rows = store.merge_rows()  # newest first
    with store.listing() as listings:
        bounced = listings.bounced()
    newest: dict[int, MergeRow] = {}
    for row in rows:
        newest.setdefault(row.task_id, row)
    merged = sorted(
        (r for r in rows if r.state == "merged"),
        key=lambda r: r.finished_at or 0.0,
        reverse=True,
    )
    attempts = Counter(r.task_id for r in rows)
    return MergeStatus(
        queued=[_queued(r, now) for r in sorted(rows, key=lambda r: r.id) if r.state == "queued"],
        in_progress=[_in_progress(r, now) for r in rows if r.state == "merging"],
        merged=[_merged(r) for r in merged[:RECENT_MERGES]],
        conflicts=[_conflict(r) for r in newest.values() if _waits_on(r) == "conflict"],
        failures=[_failure(r) for r in newest.values() if _waits_on(r) == "failed"],
        bounces=[Bounce(name, attempts[i], n) for i, name, n in bounced],
    )


def _waits_on(newest: MergeRow) -> str | None:
    """``conflict`` or ``failed`` while a task's newest merge conflicted or failed and the task
    still waits for a person on it (not cancelled, not back with its agent, not retried); a
    task failed for bouncing too often is listed by its last conflict."""
    if newest.state == "conflict" and newest.task_state in (TaskState.CONFLICT, TaskState.FAILED):
        return "conflict"
    if newest.state in FAILED_MERGES and newest.task_state == TaskState.FAILED:
        return "failed"
    return None


def _queued(row: MergeRow, now: float) -> Queued:
    return Queued(*_entry(row), row.queued_at, _since(now, row.queued_at))


def _in_progress(row: MergeRow, now: float) -> InProgress:
    return InProgress(*_entry(row), row.started_at, _since(now, row.started_at))


def _merged(row: MergeRow) -> Merged:
    return Merged(*_entry(row), row.result_sha, row.finished_at)


def _conflict(row: MergeRow) -> Conflict:
    return Conflict(*_entry(row), list(row.conflict_files or []), row.finished_at)


def _failure(row: MergeRow) -> Failure:
    error = _last_line(row.verify_output) if row.state == "verify_failed" else ""
    return Failure(*_entry(row), row.state, error or _last_line(row.output), row.finished_at)


def _entry(row: MergeRow) -> tuple[str, int, int, str, TaskState]:
    """The fields every :class:`QueueEntry` starts with."""
    return row.task, row.task_id, row.attempt, row.branch, row.task_state


def _since(now: float, at: float | None) -> float | None:
    return None if at is None else round(max(0.0, now - at), 1)


def _last_line(text: str | None) -> str:
    lines = [line for line in (text or "").splitlines() if line.strip()]
    return lines[-1].strip() if lines else ""


def integrated_diff(settings: Settings, detail: TaskDetail, stat: bool = False) -> str:
    """What merging a done task brought into the integration branch: its merge commit
    against the first parent (the integration branch before the merge).

    Empty when the task's branch was already in the integration branch (nothing merged).
    """
    key, state, sha = detail.key, detail.state, detail.merged_sha
    if state != S.DONE or not sha:
        raise UsageError(
            f"task {key} is {state}, not merged: nothing was integrated yet; "
            f"`cw task diff {key}` shows its changes"
        )
    repo = settings.repo
    if not branches.commit_exists(repo, sha):
        raise GitError(f"task {key}'s merge commit {sha[:10]} is not in {repo}; see `cw doctor`")
    first = branches.parents(repo, sha)[:1]
    head = detail.head_sha
    if not first or (
        head and branches.commit_exists(repo, head) and branches.is_ancestor(repo, head, first[0])
    ):
        return ""  # the branch was in the integration branch already: the merge added nothing
    return branches.first_parent_diff(repo, sha, stat=stat)
