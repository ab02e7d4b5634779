"""Branches, commits and diffs: reading and naming history."""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path

from cw import defaults
from cw.errors import GitError
from cw.git.runner import (
    DIFF_FLAGS,
    call,
    failure,
    git_common_dir,
    loose_ref,
    nul_split,
    repo_lock,
    rev,
    run,
)

logger = logging.getLogger(__name__)

#: Where a task's first attempt puts a branch of its name it finds already there.
STALE_PREFIX = "cw/stale/"


def head_sha(repo: Path) -> str | None:
    """The sha of HEAD, or None for an unborn HEAD (a repository with no commits)."""
    return rev(repo, "HEAD")


def branch_sha(repo: Path, branch: str) -> str | None:
    """The sha of ``refs/heads/<branch>``, or None if the branch does not exist: from its loose
    ref file when it has one, else from git."""
    ref = f"refs/heads/{branch}"
    return loose_ref(repo, ref) or rev(repo, ref)


def ensure_branch(repo: Path, branch: str, start: str) -> str:
    """Create ``branch`` at ``start`` (a sha or ref) unless it exists; return its sha."""
    with repo_lock(repo):
        existing = branch_sha(repo, branch)
        if existing is not None:
            return existing
        sha = run(repo, "rev-parse", "--verify", f"{start}^{{commit}}")
        run(repo, "branch", "--no-track", branch, sha)
        logger.info("created branch %s at %s", branch, sha)
        return sha


def checked_out(repo: Path) -> str | None:
    """The branch ``repo``'s own working tree has checked out (None when detached)."""
    result = call(repo, "symbolic-ref", "--quiet", "HEAD")
    return result.out.removeprefix("refs/heads/") if result.status == 0 else None


def checked_out_in(repo: Path, branch: str) -> Path | None:
    """A working tree of ``repo`` that has ``branch`` checked out, or None: read from git's
    HEAD files without starting git."""
    common = git_common_dir(repo)
    wanted = f"ref: refs/heads/{branch}"
    heads = [(common / "HEAD", common.parent)]
    linked = common / "worktrees"
    for entry in sorted(linked.iterdir()) if linked.is_dir() else []:
        heads.append((entry / "HEAD", Path(_read(entry / "gitdir")).parent))
    for head, top in heads:
        if _read(head) == wanted:
            return top
    return None


def integration_checked_out(branch: str, holder: Path) -> tuple[str, str]:
    """Why cw will not move its integration branch ``branch``, checked out in ``holder``, and
    what to do about it."""
    return (
        f"the integration branch {branch} is checked out in {holder}",
        "cw would move it under that working tree; check out another branch there, or give cw "
        "a branch of its own (integration_branch in .cw/config.toml; the default is "
        f"{defaults.INTEGRATION_BRANCH})",
    )


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return ""


def back_on_branch(worktree: Path, branch: str, base: str | None, integration: str) -> str | None:
    """Put ``worktree`` back on ``branch`` if its agent left it (checked out another branch or
    a detached HEAD) for commits of its own that build on it: the branch moves up to them, so
    their work is merged rather than lost (uncommitted changes stay). ``base``: where the
    branch started, what a HEAD must build on if the agent deleted the branch. None when it is
    on the branch now; else why it cannot be: HEAD does not build on the branch, or holds
    commits that are not the agent's (``integration``'s, another task's, a person's branch)."""
    where = checked_out(worktree)
    if where == branch:
        return None
    head = rev(worktree, "HEAD")
    tip = rev(worktree, f"refs/heads/{branch}") or base
    left = f"the agent left branch {branch} for " + (
        f"branch {where}" if where else "a detached HEAD"
    )
    fix = f"in {worktree}, `git checkout {branch}` (and bring the work over), then `cw task retry`"
    if head is None or tip is None or not is_ancestor(worktree, tip, head):
        at = head[:12] if head else "no commit"
        return f"{left} at {at}, which does not build on it: none of it is merged; {fix}"
    if where == integration or (where or "").startswith(defaults.TASK_BRANCH_PREFIX):
        return f"{left}, a branch cw keeps: none of it is merged (see `git log {where}`); {fix}"
    if _others(worktree, tip, head, where):
        return (
            f"{left} at {head[:12]}, which holds commits of other branches: none of it is "
            f"merged; {fix}"
        )
    run(worktree, "checkout", "--quiet", "-B", branch, head)
    logger.warning("%s; the branch moves up to %s, where its work is", left, head[:12])
    return None


def _others(worktree: Path, tip: str, head: str, where: str | None) -> bool:
    """Whether any commit ``head`` has beyond ``tip`` is on a branch other than ``where``."""
    beyond = count_commits(worktree, head, tip)
    mine = ["--exclude", where] if where else []
    alone = run(worktree, "rev-list", "--count", head, f"^{tip}", "--not", *mine, "--branches")
    return int(alone) != beyond


def set_aside(repo: Path, branch: str) -> str | None:
    """Rename ``branch``, if it exists, to ``cw/stale/...`` (its work kept, out of the way): a
    task's first attempt finding its branch there finds an earlier district's (``.cw`` made
    again), whose commits are not this task's. The new name, or None when there was none."""
    sha = branch_sha(repo, branch)
    if sha is None:
        return None
    aside = _aside(branch, sha)
    run(repo, "branch", "--move", "--force", branch, aside)
    return aside


def keep_aside(repo: Path, branch: str, sha: str) -> str:
    """A ``cw/stale/...`` branch at ``sha`` (``branch``'s work that is about to leave it):
    kept, out of the way. Its name."""
    aside = _aside(branch, sha)
    run(repo, "update-ref", "-m", "cw: set aside", f"refs/heads/{aside}", sha)
    return aside


def _aside(branch: str, sha: str) -> str:
    return f"{STALE_PREFIX}{branch.removeprefix(defaults.TASK_BRANCH_PREFIX)}-{sha[:10]}"


def is_valid_branch_name(repo: Path, name: str) -> bool:
    """What git accepts as a new branch name (``git check-ref-format --branch``)."""
    return call(repo, "check-ref-format", "--branch", name).status == 0


def is_ancestor(repo: Path, commit: str, of: str) -> bool:
    """Whether ``commit`` is ``of`` or one of its ancestors."""
    result = call(repo, "merge-base", "--is-ancestor", commit, of)
    if result.status in (0, 1):
        return result.status == 0
    raise GitError(failure(("merge-base",), result))


def holds(repo: Path, tip: str, commit: str) -> bool:
    """Whether ``tip`` holds ``commit``; False too when ``commit`` is not in the repository
    (gone with a reset and a prune, or never fetched from the hub)."""
    try:
        return is_ancestor(repo, commit, tip)
    except GitError:  # git cannot find the commit
        return False


def list_branches(repo: Path, prefix: str) -> dict[str, str]:
    """Local branches whose names start with ``prefix``, each with its sha."""
    pattern = f"refs/heads/{prefix.rstrip('/')}"
    out = run(repo, "for-each-ref", "--format=%(objectname) %(refname:lstrip=2)", pattern)
    pairs = (line.split(" ", 1) for line in out.splitlines() if line.strip())
    return {name: sha for sha, name in pairs if name.startswith(prefix)}


def commit_exists(repo: Path, sha: str) -> bool:
    """Whether ``sha`` names a commit present in ``repo``."""
    return rev(repo, sha) is not None


def count_commits(repo: Path, head: str, not_in: str) -> int:
    """How many commits ``head`` has that ``not_in`` has not."""
    return int(run(repo, "rev-list", "--count", f"{not_in}..{head}"))


def parents(repo: Path, sha: str) -> list[str]:
    """The parents of commit ``sha``, the first parent first."""
    return run(repo, "rev-list", "--parents", "-n", "1", sha).split()[1:]


def first_parent_diff(repo: Path, sha: str, *, stat: bool = False) -> str:
    """What commit ``sha`` changed against its first parent (for a merge: what it brought)."""
    fmt = ("--stat",) if stat else ()
    return run(repo, "diff", *DIFF_FLAGS, *fmt, f"{sha}^1", sha, "--", strip=False)


def ref_sha(repo: Path, ref: str) -> str | None:
    """The commit sha of a full ref name (``refs/...``), or None if it names nothing."""
    return rev(repo, ref)


def log_subjects(repo: Path, base: str, head: str, paths: list[str]) -> list[str]:
    """Commit subjects in ``base..head`` that touched ``paths`` (first parent only)."""
    out = run(repo, "log", "--first-parent", "--format=%s", f"{base}..{head}", "--", *paths)
    return [line for line in out.splitlines() if line.strip()]


def changed_files(repo: Path, base: str, head: str) -> list[str]:
    """The files ``head`` changes since its merge base with ``base``."""
    return nul_split(run(repo, "diff", *DIFF_FLAGS, "--name-only", "-z", f"{base}...{head}", "--"))


def diff(
    repo: Path,
    base: str,
    *,
    worktree: Path | None = None,
    branch: str | None = None,
    stat: bool = False,
) -> str:
    """A task's changes against ``base``: of a worktree (uncommitted work included) or a branch.

    Both compare against the merge base of ``base`` and the task's commit, so
    work merged into the integration branch meanwhile does not show reversed.
    """
    fmt = ("--stat",) if stat else ()
    if worktree is not None and branch is None:
        return _worktree_diff(worktree, base, fmt)
    if branch is not None and worktree is None:
        return run(repo, "diff", *DIFF_FLAGS, *fmt, f"{base}...{branch}", "--", strip=False)
    raise ValueError("diff needs exactly one of worktree= or branch=")


def diffstat(repo: Path, base: str, branch: str | None) -> str:
    """The last line of ``git diff --stat`` of ``branch`` against ``base`` (``1 file changed,
    2 insertions(+)``), "no changes", "(branch not on this host)", or "-" for no branch."""
    if not branch:
        return "-"
    try:
        lines = diff(repo, base, branch=branch, stat=True).strip().splitlines()
    except GitError:
        return "(branch not on this host)"
    return lines[-1].strip() if lines else "no changes"


def _worktree_diff(worktree: Path, base: str, fmt: tuple[str, ...]) -> str:
    """Diff ``base`` against the working tree, staging into a throwaway index."""
    merge_base = call(worktree, "merge-base", base, "HEAD")
    start = merge_base.out if merge_base.status == 0 else base
    real_index = Path(run(worktree, "rev-parse", "--path-format=absolute", "--git-path", "index"))
    with tempfile.TemporaryDirectory(prefix="cw-index-") as tmp:
        index = Path(tmp) / "index"
        if real_index.exists():
            shutil.copyfile(real_index, index)  # its stat data saves re-hashing files
        env = {"GIT_INDEX_FILE": str(index)}
        run(worktree, "add", "-A", env=env)
        return run(
            worktree, "diff", "--cached", *DIFF_FLAGS, *fmt, start, "--", env=env, strip=False
        )
