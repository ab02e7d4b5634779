"""The merge worker's job: integrate finished task branches, in its own worktree, verified.

A merge message names one attempt; the merge worker takes it and, as one merge train
(:mod:`cw.git.train`), up to ``merge_train - 1`` more merges waiting in the queue. What git
merges cleanly merges; the tasks' verify steps and the project's verify command then run on the
merged tree, and only a green result moves the integration branch. Conflicts and red checks go
back to the task's own agent (a new attempt that resumes its session), up to ``max_bounces``
times.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path

from cw import defaults
from cw.errors import GitError, NotFound
from cw.git import branches, mergechecks, worktrees
from cw.git.train import Outcome, run_train
from cw.host.locks import file_lock, is_held
from cw.settings import Settings
from cw.states import TaskState
from cw.store import Claim, MergeJob, MergeReport, Store, TransientDatabaseError
from cw.store.records import Intent, machinery_retries

logger = logging.getLogger(__name__)


@dataclass
class MergeResult:
    merged: list[MergeJob] = field(default_factory=list)  # clean up their worktrees later
    bounced: list[Claim] = field(default_factory=list)  # sent back to their agents: send these
    retry_in: float | None = None  # git failed around it: send the merge again this much later


#: The cars of one train: each merge's claim and job, in the order they are merged.
Cars = list[tuple[Claim, MergeJob]]


def merge_attempt(settings: Settings, store: Store, claim: Claim) -> MergeResult:
    """Merge the attempt's branch if it is still ours, with the merges waiting behind it."""
    note_merge()
    with merge_lock(settings):
        mergechecks.stop_left_checks(settings)
        job = store.begin_merge(claim)
        if job is None:
            logger.info("merge of task %s attempt %s is not ours; skipping", *_ids(claim))
            return MergeResult()
        cars = [(claim, job)]
        for waiting in store.queued_merges(settings.merge_train - 1):
            taken = store.begin_merge(waiting)
            if taken is not None:
                cars.append((waiting, taken))
        try:
            outcomes = _train(settings, store, cars)
        except (GitError, TransientDatabaseError) as exc:
            # A lock race, the hub away, the database busy: cw's machinery, not the agents'.
            _requeue(store, cars[1:])
            return MergeResult(retry_in=_retry(store, claim, exc))
        except Exception as exc:
            # Never leave a task "merging" for ever: record the failure, then let Celery log it.
            store.fail_merge(claim, f"internal error: {exc!r}")
            raise
        return _conclude(settings, store, outcomes)


def _train(settings: Settings, store: Store, cars: Cars) -> list[tuple[Claim, MergeJob, Outcome]]:
    """Run the train. Should it break on something unexpected, the message's own merge is
    made alone and the others wait for their own messages: one bad car fails only its task."""
    landed = store.last_landed()
    try:
        outcomes = run_train(settings, [job for _, job in cars], landed)
    except GitError:
        raise
    except Exception:
        if len(cars) == 1:
            raise
        logger.exception("the merge train of %d broke; merging %s alone", len(cars), cars[0][1].key)
        _requeue(store, cars[1:])
        cars = cars[:1]
        outcomes = run_train(settings, [cars[0][1]], landed)
    return [(claim, job, outcome) for (claim, job), outcome in zip(cars, outcomes, strict=True)]


def _requeue(store: Store, cars: Cars) -> None:
    """The train left these cars behind: each waits for its own merge message."""
    for claim, _job in cars:
        store.requeue_merge(claim)


def _retry(store: Store, claim: Claim, exc: Exception) -> float | None:
    """Git or the database failed around this merge: queued again for a later try (None:
    given up, failed)."""
    retries, pause = machinery_retries(exc), defaults.MACHINERY_RETRY_SECONDS
    retry_in = store.retry_merge(claim, str(exc), retries, pause)
    log = logger.warning if retry_in is not None else logger.error
    log("merge of task %s attempt %s: %s", *_ids(claim), exc)
    return retry_in


def _conclude(
    settings: Settings, store: Store, outcomes: list[tuple[Claim, MergeJob, Outcome]]
) -> MergeResult:
    """Record each car: landed (done), sent back to its agent, or (git failed around it) queued
    again for a try after a pause: the message's own by this message's retry, another by its
    own message or the reconciler's (trains leave it alone until then)."""
    result = MergeResult()
    for place, (claim, job, outcome) in enumerate(outcomes):
        if isinstance(outcome, GitError):
            retry_in = _retry(store, claim, outcome)
            if place == 0:  # the message's own: its Celery retry brings it back
                result.retry_in = retry_in
        elif outcome.sha is not None:
            store.finish_merge(claim, outcome)
            result.merged.append(job)
        else:
            _bounce(settings, store, claim, job, outcome, result)
    return result


def _bounce(
    settings: Settings,
    store: Store,
    claim: Claim,
    job: MergeJob,
    report: MergeReport,
    result: MergeResult,
) -> None:
    try:
        intent = _intent(settings, store, job, report.conflict_files)
    except GitError as exc:  # the intent only helps the agent: never a reason not to send it
        logger.warning("no intent for the bounce of %s: %s", job.key, exc)
        intent = []
    bounced = store.bounce(
        claim, report, intent=intent, max_bounces=settings.max_bounces, cap=settings.running_cap
    )
    if bounced is not None:
        result.bounced.append(bounced)


def _intent(settings: Settings, store: Store, job: MergeJob, files: list[str]) -> list[Intent]:
    """What the tasks that changed these files on the integration side set out to do."""
    head = branches.branch_sha(settings.repo, settings.integration_branch)
    if not (job.base_sha and head):
        return []
    intent = []
    for subject in branches.log_subjects(settings.repo, job.base_sha, head, files or ["."]):
        key = subject.removeprefix("cw: merge ").split(":", 1)[0]
        try:
            detail = store.task_detail(store.find_task_id(key))
        except NotFound:
            continue
        intent.append(Intent(key, detail.name, detail.prompt))
    return intent[:10]


def clean_up(settings: Settings, job: MergeJob) -> None:
    """Remove a merged task's worktree: its branch holds everything (GIT-04).

    Only worktrees of this clone: with a hub, another host's are its own `cw gc`'s job.
    Anything uncommitted is committed to its branch first, so nothing is ever lost."""
    if job.worktree and Path(job.worktree).parent == settings.worktree_dir:
        worktrees.remove_worktree(settings.repo, Path(job.worktree))


class _Cleaner:
    """Removes merged worktrees in a background thread, only while no merge is running.

    Removal holds the repository lock the next merge needs to move the integration branch, so
    it waits for a quiet moment (``quiet`` seconds without a merge) instead of slowing merges.
    A removal lost with the process is harmless: the worktree stays until `cw gc`."""

    def __init__(self, quiet: float = 0.5) -> None:
        self.quiet = quiet
        self.jobs: queue.Queue[tuple[Settings, Store, MergeJob]] = queue.Queue()
        self.last_merge = time.monotonic()
        threading.Thread(target=self._run, name="cw-clean-up", daemon=True).start()

    def _run(self) -> None:
        while True:
            settings, store, job = self.jobs.get()
            while (wait := self.last_merge + self.quiet - time.monotonic()) > 0:
                time.sleep(wait)
            try:
                # A checkpoint's comments may have sent the task back to its agent meanwhile.
                if store.task_state(job.task_id) == TaskState.DONE:
                    clean_up(settings, job)
            except Exception:
                logger.exception("could not remove the worktree of merged task %s", job.key)


_cleaner: _Cleaner | None = None  # one per merge worker process, made on first use


def clean_up_later(settings: Settings, store: Store, job: MergeJob) -> None:
    """:func:`clean_up` once the merge worker has a quiet moment."""
    global _cleaner
    if _cleaner is None:
        _cleaner = _Cleaner()
    _cleaner.last_merge = time.monotonic()
    _cleaner.jobs.put((settings, store, job))


def note_merge() -> None:
    """A merge is starting: background removals wait for it."""
    if _cleaner is not None:
        _cleaner.last_merge = time.monotonic()


def merge_lock(settings: Settings) -> AbstractContextManager[None]:
    """One merge at a time per repository, even with two merge workers."""
    return file_lock(_lock_path(settings))


def stuck_merges(settings: Settings, store: Store) -> list[Claim]:
    """Merges begun by a merge worker that died: begun, unfinished, and nobody merging now.

    Merging them again is safe: the integration worktree is reset first, the branch moves
    only by compare-and-set, and a branch already merged is recognised as such.
    """
    if is_held(_lock_path(settings)):
        return []
    return store.begun_merges()


def _lock_path(settings: Settings) -> Path:
    return settings.lock_dir / "merge.lock"


def _ids(claim: Claim) -> tuple[int, int]:
    return claim.task_id, claim.attempt
