"""The merge worker's job: integrate one finished task branch, in its own worktree, verified.

What git merges cleanly merges; the task's verify step and the project's verify command then
run on the merged tree, and only a green result moves the integration branch. Conflicts and red
checks go back to the task's own agent (a new attempt that resumes its session), up to
``max_bounces`` times.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

from cw import defaults
from cw.errors import GitError, NotFound
from cw.git import branches, hub, treemerge, worktrees
from cw.git.integrity import DroppedLine, dropped_lines, merge_base
from cw.git.verify import Verdict, run_checks
from cw.host.locks import file_lock, is_held
from cw.settings import Settings
from cw.states import TaskState
from cw.store import Claim, MergeJob, MergeReport, Store
from cw.store.records import Intent

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class MergeResult:
    merged: MergeJob | None = None  # merged: clean up its worktree once dispatch is done
    bounced: Claim | None = None  # sent back to its agent: send this new attempt
    retry_in: float | None = None  # git failed around it: send the merge again this much later


def merge_attempt(settings: Settings, store: Store, claim: Claim) -> MergeResult:
    """Merge the attempt's branch if it is still ours."""
    note_merge()
    job = store.begin_merge(claim)
    if job is None:
        logger.info("merge of task %s attempt %s is not ours; skipping", *_ids(claim))
        return MergeResult()
    try:
        with merge_lock(settings):
            report = _merge(settings, job)
    except GitError as exc:  # a lock race, the hub away: cw's machinery, not the agent's work
        retries, pause = defaults.MACHINERY_RETRIES, defaults.MACHINERY_RETRY_SECONDS
        retry_in = store.retry_merge(claim, str(exc), retries, pause)
        log = logger.warning if retry_in is not None else logger.error
        log("merge of task %s attempt %s: %s", *_ids(claim), exc)
        return MergeResult(retry_in=retry_in)
    except Exception as exc:
        # Never leave a task "merging" for ever: record the failure, then let Celery log it.
        store.fail_merge(claim, f"internal error: {exc!r}")
        raise
    if report.sha is not None:
        store.finish_merge(claim, report)
        return MergeResult(merged=job)
    intent = _intent(settings, store, job, report.conflict_files)
    bounced = store.bounce(
        claim, report, intent=intent, max_bounces=settings.max_bounces, cap=settings.running_cap
    )
    return MergeResult(bounced=bounced)


def _merge(settings: Settings, job: MergeJob) -> MergeReport:
    # The agent worker committed everything the agent left when it finished.
    source = _fetch_from_hub(settings, job) if settings.git_hub else job.branch
    old = (
        branches.branch_sha(settings.repo, settings.integration_branch)
        if settings.git_hub
        else None
    )
    treemerge.set_union_merge(
        settings.repo, [g.strip() for g in settings.merge_union.split(",") if g.strip()]
    )
    verdicts: list[Verdict] = []
    dropped: list[DroppedLine] = []
    outcome = treemerge.merge_branch(
        settings.repo,
        settings.integration_worktree,
        settings.integration_branch,
        source,
        f"cw: merge {job.key}: {job.name}",
        check=_checker(settings, job, verdicts, dropped),
        rerere=settings.merge_rerere,
    )
    if dropped:
        return _dropped_report(dropped, outcome.output)
    if settings.git_hub and outcome.merged and outcome.sha and outcome.sha != old:
        # Publish with a lease: the hub moves only if nobody else moved it meanwhile.
        hub.push_branch(
            settings.repo, settings.git_hub, outcome.sha, settings.integration_branch, expect=old
        )
    verdict = verdicts[-1] if verdicts else None
    return MergeReport(
        sha=outcome.sha if outcome.merged else None,
        conflict_files=outcome.conflict_files,
        output=outcome.output,
        rejected=outcome.rejected,
        verify_command=verdict.command if verdict else None,
        verify_exit_code=verdict.exit_code if verdict else None,
        verify_output=verdict.output if verdict else None,
    )


def _fetch_from_hub(settings: Settings, job: MergeJob) -> str:
    """Bring the hub's integration branch and the task's branch here; the ref to merge."""
    branch = settings.integration_branch
    hub.fetch_branch(settings.repo, settings.git_hub, branch, f"refs/heads/{branch}")
    source = hub.hub_ref(job.branch)
    if not hub.fetch_branch(settings.repo, settings.git_hub, job.branch, source):
        raise GitError(f"the hub {settings.git_hub} has no branch {job.branch} to merge")
    return source


def _checker(
    settings: Settings, job: MergeJob, verdicts: list[Verdict], dropped: list[DroppedLine]
) -> treemerge.Check:
    """Nothing either side added may be lost; then the verify steps must pass on the tree."""
    commands = [c.strip() for c in (job.verify, settings.verify_command) if c and c.strip()]
    log = settings.log_dir / "merges" / f"{job.task_id}-{job.key}-{job.attempt}.log"

    def check(merged: treemerge.MergedTree) -> bool:
        # Only a file both sides changed can lose a side's lines; none: nothing to check.
        base = (
            None
            if merged.auto_merged == []
            else merge_base(settings.repo, merged.old, merged.source)
        )
        if base is not None:
            dropped.extend(
                dropped_lines(settings.repo, base, merged.old, merged.source, merged.new)
            )
        if dropped:
            return False
        if commands:
            tree = merged.checkout()
            verdicts.append(run_checks(commands, tree, settings.verify_timeout, log))
            return verdicts[-1].ok
        return True

    return check


def _dropped_report(dropped: list[DroppedLine], output: str) -> MergeReport:
    """Lines a side added are missing from the merged result: a conflict, never a merge."""
    lines = [f"{d.path} ({d.side}): {d.line}" for d in dropped]
    note = "the merged result lost lines one side added:\n" + "\n".join(lines)
    return MergeReport(
        conflict_files=sorted({d.path for d in dropped}), output=f"{output}\n{note}".strip()
    )


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
