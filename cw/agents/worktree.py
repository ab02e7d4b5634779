"""An attempt's worktree on this host: its task branch, where it starts, and what the hub
holds of it."""

from __future__ import annotations

import logging
from pathlib import Path

from cw import defaults
from cw.errors import CwError
from cw.git import branches, hub, worktrees
from cw.settings import Settings
from cw.store import Claim, Store, Workspace

logger = logging.getLogger(__name__)


def prepare_worktree(
    settings: Settings, store: Store, ws: Workspace
) -> tuple[Path, str, str, str | None]:
    """The task's worktree, branch and base on this host, and the branch's tip on the hub
    (None: not there): created from the integration branch's sha the first time; later from
    the task's branch (work intact), taken from the hub when another host worked on it. The
    path is always this host's own (the attempt records it)."""
    on_hub = None
    if settings.git_hub:
        branch = settings.integration_branch
        hub.fetch_branch(settings.repo, settings.git_hub, branch, f"refs/heads/{branch}")
    if ws.branch and ws.base_sha:
        branch, base = ws.branch, ws.base_sha
        worktree = own_worktree(settings, branch)
        if settings.git_hub:
            on_hub = hub.take_hub_branch(settings.repo, settings.git_hub, branch, worktree)
        if str(worktree) != ws.worktree:
            store.record_worktree(Claim(ws.task_id, ws.attempt), str(worktree))
    else:
        slug = f"{ws.task_id}-{ws.brief.key}"
        worktree = settings.worktree_dir / slug
        branch = defaults.TASK_BRANCH_PREFIX + slug
        base = integration_sha(settings)
        first = store.record_workspace(ws.task_id, branch, str(worktree), base)
        if first and (aside := branches.set_aside(settings.repo, branch)):
            logger.warning(
                "task %s: branch %s was there before it: now %s", ws.brief.key, branch, aside
            )
        if first and settings.git_hub:
            on_hub = _not_ours_on_hub(settings, ws.brief.key, branch)
    worktrees.add_worktree(settings.repo, worktree, branch, base)
    return worktree, branch, base, on_hub


def _not_ours_on_hub(settings: Settings, key: str, branch: str) -> str | None:
    """The hub's branch of a task's name before its first attempt (an earlier district's,
    task ids start again at 1): not this task's, so its first push replaces it."""
    found = hub.hub_branches(settings.repo, str(settings.git_hub), branch).get(branch)
    if found:
        logger.warning("task %s: the hub's %s at %s is not its work: replaced", key, branch, found)
    return found


def own_worktree(settings: Settings, branch: str) -> Path:
    """This host's path for the worktree of the task branch ``branch``."""
    return worktrees.task_worktree(settings.worktree_dir, branch, defaults.TASK_BRANCH_PREFIX)


def integration_sha(settings: Settings) -> str:
    """The integration branch's commit; a :class:`CwError` when the branch is gone."""
    sha = branches.branch_sha(settings.repo, settings.integration_branch)
    if sha is None:
        raise CwError(
            f"the integration branch {settings.integration_branch!r} is gone; recreate it at "
            "its last merge (`cw doctor` says which)"
        )
    return sha
