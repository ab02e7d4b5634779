"""The hub: a shared bare repository that carries task branches between hosts."""

from __future__ import annotations

import logging
import re
import time
from pathlib import Path

from cw import defaults
from cw.errors import HubError
from cw.git import stalelocks
from cw.git.branches import branch_sha, is_ancestor, keep_aside
from cw.git.runner import Result, call, failure, repo_lock, rev, run
from cw.git.worktrees import commit_all, find_worktree, is_dirty

logger = logging.getLogger(__name__)


HUB_NAMESPACE = "refs/cw-hub/heads/"


#: Never a prompt for a password in a talk with the hub: a worker has nobody to answer it.
PROMPTLESS = {"GIT_TERMINAL_PROMPT": "0"}


def _talk(repo: Path, *args: str, timeout: float | None = None) -> Result:
    """``git ARGS`` that talks with the hub, killed (git, ssh and all) after
    HUB_TIMEOUT_SECONDS (or ``timeout``): a hung network is cw's machinery failing, tried again
    later, never an agent slot or the merge lock held for ever."""
    timeout = timeout or defaults.HUB_TIMEOUT_SECONDS
    result = call(repo, *args, env=PROMPTLESS, timeout=timeout)
    if result.status != 0 and result.err.startswith("Timeout:"):  # as cw.git.runner says it
        return Result(result.status, result.out, f"fatal: the hub did not answer in {timeout:g} s")
    return result


#: Two failures of a fetch are another git's doing and over in moments, so the fetch is tried
#: again: a fetch reads every worktree's HEAD, and `git worktree add` writes a placeholder HEAD
#: (the null id) before the real one ("bad object worktrees/<name>/HEAD"); and two agents of
#: one host fetching the hub's integration branch into the same ref at once race for its lock
#: ("cannot lock ref ...: is at X but expected Y", or its lock file exists).
FETCH_RETRY_PAUSES = (0.1, 0.2, 0.4, 0.8, 1.6)


def fetch_branch(repo: Path, hub: str, branch: str, into: str) -> bool:
    """Force-fetch ``branch`` from ``hub`` into the ref ``into``; False if the hub lacks it."""
    pauses = iter(FETCH_RETRY_PAUSES)
    while True:
        refspec = f"+refs/heads/{branch}:{into}"
        result = _talk(repo, "fetch", "--no-tags", "--quiet", hub, refspec)
        if result.status == 0:
            return True
        if "couldn't find remote ref" in result.err:
            return False
        pause = next(pauses, None)
        if pause is None or not _passing(result.err):
            raise HubError(failure(("fetch",), result))
        time.sleep(pause)


def _passing(err: str) -> bool:
    """Whether a fetch failed on another git's work in progress (see FETCH_RETRY_PAUSES)."""
    half_made_worktree = "bad object worktrees/" in err and "/HEAD" in err
    return half_made_worktree or "cannot lock ref" in err


def push_branch(
    repo: Path,
    hub: str,
    source: str,
    branch: str,
    expect: str | None = None,
    timeout: float | None = None,
) -> None:
    """Push ``source`` to the hub's ``branch``; with ``expect``, only if the hub still has it
    there (``""``: only if the hub has no such branch)."""
    lease = f"--force-with-lease=refs/heads/{branch}:{expect}" if expect is not None else "--force"
    result = _push(repo, lease, hub, f"{source}:refs/heads/{branch}", timeout=timeout)
    if result.status != 0:
        raise HubError(failure(("push",), result))


#: How a hub's git says a lock file is in the way: "Unable to create '<path>.lock': File exists".
LOCKED = re.compile(r"Unable to create '([^']+\.lock)': File exists")


def _push(repo: Path, *args: str, timeout: float | None = None) -> Result:
    """``git push --quiet ARGS``; a hub on this file system whose ref lock a killed git left
    behind (a host that died mid-push, with its receive-pack) gets that lock removed, once it
    is stale, and the push is tried again. A live push's lock is left alone."""
    result = _talk(repo, "push", "--quiet", *args, timeout=timeout)
    locks = [Path(found) for found in LOCKED.findall(result.err)]
    if result.status == 0 or not locks or not stalelocks.remove_stale_locks(locks):
        return result
    return _talk(repo, "push", "--quiet", *args, timeout=timeout)


def hub_ref(branch: str) -> str:
    """Where a merge worker keeps its fetched copy of a task branch."""
    return HUB_NAMESPACE + branch


def take_hub_branch(repo: Path, hub: str, branch: str, worktree: Path) -> str | None:
    """Bring the hub's copy of a task branch here when it moved beyond the local one (another
    host worked on the task since): the local branch, and the worktree at ``worktree`` that
    has it checked out, move to it. What only this host has then (commits the hub lacks,
    uncommitted files) is an earlier, superseded attempt's: kept as a ``cw/stale/...`` branch,
    never pushed over the newer work. A local branch ahead of the hub stays. Returns the hub's
    sha; None when the hub has no such branch."""
    copy = hub_ref(branch)
    if not fetch_branch(repo, hub, branch, copy):
        return None
    theirs, ours = rev(repo, copy), branch_sha(repo, branch)
    if theirs is None or ours == theirs:
        return theirs
    if ours is not None and is_ancestor(repo, theirs, ours):
        return theirs  # only this host moved: its commits go to the hub at the next push
    entry = find_worktree(repo, worktree)
    checked_out = entry is not None and entry.branch == branch and worktree.is_dir()
    if checked_out and is_dirty(worktree):
        ours = commit_all(worktree, "cw: WIP (set aside: the hub has newer work)") or ours
    if ours is not None and not is_ancestor(repo, ours, theirs):
        aside = keep_aside(repo, branch, ours)
        logger.warning("%s moved on the hub since this host's work: kept as %s", branch, aside)
    if checked_out:
        run(worktree, "reset", "--hard", "--quiet", theirs)
    else:
        with repo_lock(repo):
            ref = f"refs/heads/{branch}"
            run(repo, "update-ref", "-m", "cw: from the hub", ref, theirs, ours or "")
    return theirs


def hub_branches(repo: Path, hub: str, prefix: str) -> dict[str, str]:
    """The hub's branches whose names start with ``prefix``, each with its sha."""
    listed = _talk(repo, "ls-remote", "--heads", hub, f"refs/heads/{prefix}*")
    if listed.status != 0:
        raise HubError(failure(("ls-remote",), listed))
    out = listed.out
    pairs = (line.split("\t", 1) for line in out.splitlines() if "\t" in line)
    found = {ref.removeprefix("refs/heads/"): sha for sha, ref in pairs}
    return {name: sha for name, sha in found.items() if name.startswith(prefix)}


def delete_hub_branch(repo: Path, hub: str, branch: str, sha: str) -> bool:
    """Delete the hub's ``branch`` only if it still points at ``sha``; False when it moved."""
    lease = f"--force-with-lease=refs/heads/{branch}:{sha}"
    result = _push(repo, lease, hub, f":refs/heads/{branch}")
    if result.status == 0:
        logger.info("deleted the hub's branch %s at %s", branch, sha)
        return True
    if any(word in result.err for word in ("stale info", "rejected", "does not exist")):
        return False  # it moved, or another host's gc deleted it first
    raise HubError(failure(("push",), result))


def hub_copies(repo: Path, prefix: str) -> dict[str, str]:
    """Fetched copies of the hub's branches named ``prefix...`` kept here (:func:`hub_ref`),
    by branch name, each with its sha."""
    pattern = HUB_NAMESPACE + prefix.rstrip("/")
    out = run(repo, "for-each-ref", "--format=%(objectname) %(refname)", pattern)
    pairs = (line.split(" ", 1) for line in out.splitlines() if line.strip())
    found = {ref.removeprefix(HUB_NAMESPACE): sha for sha, ref in pairs}
    return {name: sha for name, sha in found.items() if name.startswith(prefix)}


def delete_hub_copy(repo: Path, branch: str, sha: str) -> bool:
    """Delete the fetched copy of the hub's ``branch`` if it still points at ``sha``."""
    with repo_lock(repo):
        result = call(repo, "update-ref", "-m", "cw gc", "-d", hub_ref(branch), sha)
    return result.status == 0
