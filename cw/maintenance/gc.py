"""``cw gc``: remove what holds no unmerged work (finished worktrees, merged branches, the hub's
copies), and each host's clean-up of its own finished worktrees.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cw import defaults
from cw.errors import GitError
from cw.git import branches, hub, worktrees
from cw.settings import Settings
from cw.states import TaskState
from cw.store import Store
from cw.store.read import TaskFootprint

logger = logging.getLogger(__name__)


S = TaskState


#: A worktree of a task in one of these states is in use or about to be: gc never touches it.
#: (waiting too: a person may be looking at it, and the agent resumes there.)
LIVE = frozenset({S.READY, S.QUEUED, S.RUNNING, S.MERGING, S.WAITING})


#: Tasks whose worktree has no further use.
FINISHED = frozenset({S.DONE, S.CANCELLED})


PREFIX = defaults.TASK_BRANCH_PREFIX


@dataclass(frozen=True)
class GcItem:
    """One thing gc looked at: a worktree, a branch, a pruned entry or a stray directory."""

    kind: str  # worktree | branch | entry (a stale worktree entry git pruned) | stray
    target: str
    removed: bool  # removed, or would be under --dry-run
    reason: str


@dataclass
class GcReport:
    dry_run: bool
    items: list[GcItem] = field(default_factory=list)

    def add(self, kind: str, target: str, removed: bool, reason: str) -> None:
        self.items.append(GcItem(kind, target, removed, reason))

    def as_json(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "removed": [asdict(i) for i in self.items if i.removed],
            "kept": [asdict(i) for i in self.items if not i.removed],
        }


@dataclass
class _Gc:
    settings: Settings
    store: Store
    integration: str  # the integration branch's sha when gc started (it only moves forward)
    report: GcReport
    gone: set[Path] = field(default_factory=set)  # worktrees removed (or that would be)
    committed: set[str] = field(default_factory=set)  # branches given a WIP commit (or would)

    @property
    def repo(self) -> Path:
        return self.settings.repo


def gc(settings: Settings, store: Store, *, dry_run: bool) -> GcReport:
    """Remove merged or finished task worktrees, merged branches of done tasks, stale
    worktree entries; report stray directories. ``dry_run`` changes nothing."""
    integration = current_integration(settings)
    if integration is None:
        raise GitError(
            f"the integration branch {settings.integration_branch} does not exist"
            f"{' on the hub' if settings.git_hub else ''}, so nothing can be called merged; "
            "see `cw doctor`"
        )
    run = _Gc(settings, store, integration, GcReport(dry_run))
    for entry in task_worktrees(settings):
        _gc_worktree(run, entry)
    for branch, sha in sorted(branches.list_branches(settings.repo, PREFIX).items()):
        _gc_branch(run, branch, sha)
    if settings.git_hub:
        _gc_hub(run)
    for line in worktrees.prune_worktrees(settings.repo, dry_run=dry_run):
        target, _, why = line.removeprefix("Removing ").partition(": ")
        run.report.add("entry", target, True, f"git worktree prune: {why or line}")
    for path in _strays(settings):
        run.report.add(
            "stray",
            str(path),
            False,
            "not a git worktree; it may hold a person's files: look, then delete it by hand",
        )
    return run.report


def current_integration(settings: Settings) -> str | None:
    """The integration branch's sha as the district knows it: with a hub, the hub's (fetched
    into cw's hub namespace; on a host without the merge worker the local branch is stale)."""
    branch, hub_url = settings.integration_branch, settings.git_hub
    if not hub_url:
        return branches.branch_sha(settings.repo, branch)
    if not hub.fetch_branch(settings.repo, hub_url, branch, hub.hub_ref(branch)):
        return None
    return branches.ref_sha(settings.repo, hub.hub_ref(branch))


def clean_host_worktrees(settings: Settings, store: Store, before: float) -> GcReport:
    """This host's worktrees of tasks done or cancelled before ``before``, removed as gc
    removes them. Each is matched to its task by branch: the path a task records may be
    another host's."""
    finished = store.finished_branches(before)
    left = [str(wt.path) for wt in task_worktrees(settings) if wt.branch in finished]
    return clean_finished_worktrees(settings, store, left)


def clean_finished_worktrees(settings: Settings, store: Store, paths: Iterable[str]) -> GcReport:
    """gc's worktree pass for the reconciler, on these worktrees of done or cancelled tasks
    (each task's state is read again just before its worktree goes)."""
    report = GcReport(dry_run=False)
    wanted = {Path(p).resolve() for p in paths}
    if not wanted:
        return report
    integration = branches.branch_sha(settings.repo, settings.integration_branch) or ""
    run = _Gc(settings, store, integration, report)
    for entry in task_worktrees(settings):
        if entry.path.resolve() in wanted:
            _gc_worktree(run, entry)
    return report


def task_worktrees(settings: Settings) -> list[worktrees.WorktreeEntry]:
    root = settings.worktree_dir.resolve()
    return [
        wt
        for wt in worktrees.list_worktrees(settings.repo)
        if not wt.main and wt.path.resolve().is_relative_to(root)
    ]


def _task_of(store: Store, path: Path, branch: str | None) -> TaskFootprint | None:
    """The task that owns a worktree, read fresh (its state may have moved meanwhile)."""
    for task in store.workspaces():
        if task.worktree and Path(task.worktree).resolve() == path.resolve():
            return task
        if branch and task.branch == branch:
            return task
    return None


def _gc_worktree(run: _Gc, entry: worktrees.WorktreeEntry) -> None:
    path = entry.path
    try:
        task = _task_of(run.store, path, entry.branch)
        remove, reason = _worktree_verdict(run, entry, task)
        if remove:
            reason = _remove_worktree(run, entry, task, reason)
    except (GitError, OSError) as exc:  # one worktree's trouble ends no clean-up of the rest
        remove, reason = False, f"could not check or remove it: {exc}"
    run.report.add("worktree", str(path), remove, reason)


def _worktree_verdict(
    run: _Gc, entry: worktrees.WorktreeEntry, task: TaskFootprint | None
) -> tuple[bool, str]:
    integ = run.settings.integration_branch
    if entry.branch is None:
        return False, "detached HEAD: its commits are on no branch; save them by hand"
    if task is None:
        return False, f"no task records it; `git worktree remove {entry.path}` if unneeded"
    state, key = task.state, task.key
    if state in LIVE:
        return False, f"task {key} is {state}"
    if state in FINISHED:
        return True, f"task {key} is {state}"
    if branches.is_ancestor(run.repo, entry.branch, run.integration):
        return True, f"task {key} is {state}; branch {entry.branch} holds nothing not in {integ}"
    return False, f"task {key} is {state} and branch {entry.branch} is not merged into {integ}"


def _remove_worktree(
    run: _Gc, entry: worktrees.WorktreeEntry, task: TaskFootprint | None, reason: str
) -> str:
    """Remove (or under --dry-run, plan to) a worktree; uncommitted work goes to its branch."""
    branch = entry.branch or ""
    dirty = entry.path.is_dir() and worktrees.is_dirty(entry.path)
    run.gone.add(entry.path.resolve())
    if run.report.dry_run:
        if dirty:
            run.committed.add(branch)
            return f"{reason}; would commit its uncommitted changes to {branch} first"
        return reason
    before = branches.branch_sha(run.repo, branch)
    key = task.key if task else entry.path.name
    worktrees.remove_worktree(
        run.repo, entry.path, force_commit_message=f"cw gc: uncommitted work of {key}"
    )
    if branches.branch_sha(run.repo, branch) != before:
        run.committed.add(branch)
        return f"{reason}; its uncommitted changes were committed to {branch} first"
    return reason


def _gc_branch(run: _Gc, branch: str, sha: str) -> None:
    try:
        reason = _why_keep_branch(run, branch, sha)
        if reason is None:
            if run.report.dry_run or worktrees.delete_branch(run.repo, branch, sha):
                why = f"merged into {run.settings.integration_branch} and its task is done"
                run.report.add("branch", branch, True, why)
                return
            reason = "it moved or was checked out while gc ran"
    except GitError as exc:
        reason = f"could not check or delete it: {exc}"
    run.report.add("branch", branch, False, reason)


def _why_keep_branch(run: _Gc, branch: str, sha: str) -> str | None:
    """Why a task branch must stay, or None when deleting it loses nothing."""
    integ = run.settings.integration_branch
    if branch in run.committed:
        return "holds the uncommitted work gc committed from its worktree"
    if not branches.is_ancestor(run.repo, sha, run.integration):
        count = branches.count_commits(run.repo, sha, run.integration)
        return f"{count} commit(s) not in {integ}"
    task = next((t for t in run.store.workspaces() if t.branch == branch), None)
    if task is None:
        return "no task records it (cw deletes only branches of done tasks)"
    if task.state != S.DONE:
        return f"task {task.key} is {task.state}: its branch is its work"
    checked_out = {
        wt.branch
        for wt in worktrees.list_worktrees(run.repo)
        if wt.path.exists() and wt.path.resolve() not in run.gone
    }
    if branch in checked_out:
        return "checked out in a worktree"
    return None


def _gc_hub(run: _Gc) -> None:
    """The hub's task branches, and the copies of them fetched here, of done tasks whose
    commits are all in the integration branch: deleted (the hub's only if it did not move)."""
    hub_url, repo = run.settings.git_hub, run.repo
    tasks = {t.branch: t for t in run.store.workspaces() if t.branch}
    for branch, sha in sorted(hub.hub_branches(repo, hub_url, PREFIX).items()):
        reason = _why_keep_merged(run, tasks.get(branch), sha)
        delete = functools.partial(hub.delete_hub_branch, repo, hub_url, branch, sha)
        _gc_ref(run, "hub branch", branch, reason, delete)
    for branch, sha in sorted(hub.hub_copies(repo, PREFIX).items()):
        reason = _why_keep_merged(run, tasks.get(branch), sha)
        delete = functools.partial(hub.delete_hub_copy, repo, branch, sha)
        _gc_ref(run, "hub copy", hub.hub_ref(branch), reason, delete)


def _gc_ref(
    run: _Gc, kind: str, target: str, reason: str | None, delete: Callable[[], bool]
) -> None:
    try:
        if reason is None:
            if run.report.dry_run or delete():
                why = f"merged into {run.settings.integration_branch} and its task is done"
                run.report.add(kind, target, True, why)
                return
            reason = "it moved (or went) while gc ran"
    except GitError as exc:
        reason = f"could not delete it: {exc}"
    run.report.add(kind, target, False, reason)


def _why_keep_merged(run: _Gc, task: TaskFootprint | None, sha: str) -> str | None:
    """Why a copy of a task branch must stay, or None when deleting it loses nothing."""
    integ = run.settings.integration_branch
    if task is None:
        return "no task records it (cw deletes only branches of done tasks)"
    if task.state != S.DONE:
        return f"task {task.key} is {task.state}: its branch is its work"
    merged = branches.commit_exists(run.repo, sha) and branches.is_ancestor(
        run.repo, sha, run.integration
    )
    return None if merged else f"holds commits not in {integ}"


def _strays(settings: Settings) -> list[Path]:
    """Directories under the worktree directory that git does not know as worktrees."""
    if not settings.worktree_dir.is_dir():
        return []
    known = {wt.path.resolve() for wt in worktrees.list_worktrees(settings.repo)}
    trash = settings.worktree_dir / defaults.WORKTREE_TRASH_DIR  # doctor's business: leftovers
    return sorted(
        p for p in settings.worktree_dir.iterdir() if p.resolve() not in known and p != trash
    )
