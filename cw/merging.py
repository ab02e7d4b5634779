"""The merge worker's job: integrate one finished task branch, in its own worktree."""

from __future__ import annotations

import logging
from contextlib import AbstractContextManager
from pathlib import Path

from cw import worktrees
from cw.errors import GitError
from cw.locks import file_lock
from cw.settings import Settings
from cw.store import Claim, MergeJob, Store

logger = logging.getLogger(__name__)


def merge_attempt(settings: Settings, store: Store, claim: Claim) -> MergeJob | None:
    """Merge the attempt's branch if it is still ours; the job when it merged.

    The caller dispatches what became ready, then calls :func:`clean_up` (dispatch first:
    removing the worktree is not on anyone's critical path).
    """
    job = store.begin_merge(claim)
    if job is None:
        logger.info("merge of task %s attempt %s is not ours; skipping", *_ids(claim))
        return None
    try:
        with merge_lock(settings):
            outcome = _merge(settings, job)
    except GitError as exc:
        store.fail_merge(claim, str(exc))
        return None
    except Exception as exc:
        # Never leave a task "merging" for ever: record the failure, then let Celery log it.
        store.fail_merge(claim, f"internal error: {exc!r}")
        raise
    if not outcome.merged:
        store.finish_merge(
            claim, sha=None, conflict_files=outcome.conflict_files, output=outcome.output
        )
        return None
    store.finish_merge(claim, sha=outcome.sha, conflict_files=[], output=outcome.output)
    return job


def clean_up(settings: Settings, job: MergeJob) -> None:
    """Remove a merged task's worktree: its branch holds everything (GIT-04)."""
    if job.worktree:
        worktrees.remove_worktree(settings.repo, Path(job.worktree))


def _merge(settings: Settings, job: MergeJob) -> worktrees.MergeOutcome:
    if job.worktree and Path(job.worktree).is_dir():
        # The agent may have left work uncommitted; it belongs in the merge.
        worktrees.commit_all(Path(job.worktree), f"cw: uncommitted work of {job.key}")
    return worktrees.merge_branch(
        settings.repo,
        settings.integration_worktree,
        settings.integration_branch,
        job.branch,
        f"cw: merge {job.key}: {job.name}",
    )


def merge_lock(settings: Settings) -> AbstractContextManager[None]:
    """One merge at a time per repository, even with two merge workers."""
    return file_lock(settings.lock_dir / "merge.lock")


def _ids(claim: Claim) -> tuple[int, int]:
    return claim.task_id, claim.attempt
