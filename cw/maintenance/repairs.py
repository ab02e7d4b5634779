"""``cw doctor --fix``: the repairs that are always safe."""

from __future__ import annotations

import logging

from cw import defaults
from cw.git import branches, stalelocks, worktrees
from cw.host import processes
from cw.maintenance.doctor import (
    being_set_up,
    cw_locks,
    finished_worktrees,
    setting_up,
    stray_agents,
)
from cw.maintenance.gc import PREFIX, clean_finished_worktrees, current_integration
from cw.settings import Settings
from cw.store import Store

logger = logging.getLogger(__name__)


def repair(settings: Settings, store: Store) -> list[str]:
    """``cw doctor --fix``: remove what crashes left (see :func:`_leftovers`) and orphan
    branches fully merged; never unmerged work. Returns what it did, one line each."""
    repo, done = settings.repo, []
    if worktrees.trash_entries(settings.worktree_dir):
        worktrees.empty_trash(repo, settings.worktree_dir)
        done.append(f"emptied {settings.worktree_dir / defaults.WORKTREE_TRASH_DIR}")
    for path in worktrees.half_made_worktrees(repo, settings.worktree_dir):
        if worktrees.discard_half_made(repo, path):
            done.append(f"removed half-made worktree {path}")
    done += [
        f"removed stale git lock {lock}"
        for lock in stalelocks.remove_stale_locks(cw_locks(settings))
    ]
    finished = [path for _, path in finished_worktrees(settings, store.workspaces())]
    report = clean_finished_worktrees(settings, store, finished)
    done += [f"removed worktree {i.target}: {i.reason}" for i in report.items if i.removed]
    return done + _delete_merged_orphans(settings, store) + stop_stray_agents(settings, store)


def stop_stray_agents(settings: Settings, store: Store) -> list[str]:
    """Stop this district's agents on this host that no running attempt owns (see
    :func:`stray_agents`); what it stopped, one line each."""
    stopped = []
    for pgid, run in sorted(stray_agents(settings, store).items()):
        processes.terminate_group(pgid, settings.agent_kill_grace)
        stopped.append(
            f"stopped agent process group {pgid} (task {run.task_id} attempt {run.attempt})"
        )
    return stopped


def _delete_merged_orphans(settings: Settings, store: Store) -> list[str]:
    integration = current_integration(settings)
    if integration is None:
        return []
    local = branches.list_branches(settings.repo, PREFIX)  # before the records, as doctor
    tasks = store.workspaces()
    recorded, claimed = {t.branch for t in tasks if t.branch}, setting_up(tasks)
    return [
        f"deleted branch {branch} (in no task's record, all of it merged)"
        for branch, sha in sorted(local.items())
        if branch not in recorded
        and not being_set_up(claimed, branch)
        and branches.is_ancestor(settings.repo, sha, integration)
        and worktrees.delete_branch(settings.repo, branch, sha)
    ]
