"""Everything cw does with git: branches, worktrees, commits, diffs and merges.

Git runs through GitPython's ``git.Git`` (one short-lived object per call, so no
``Repo`` is held open and no file handles leak). Worktree and branch changes and
integration-branch updates hold :func:`repo_lock`, a ``flock`` in the git common
directory: concurrent ``git worktree add`` fails without one.

No work is ever lost: a worktree is removed only after its uncommitted changes
are committed to its branch, and merges happen in a detached integration
worktree, never in the user's checkout.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import git

from cw.defaults import (
    CW_GIT_EMAIL,
    CW_GIT_NAME,
    GIT_LOCK_FILE,
    GIT_LOCK_STALE_SECONDS,
    WORKTREE_TRASH_DIR,
)
from cw.errors import GitError, NotAGitRepository
from cw.locks import file_lock

logger = logging.getLogger(__name__)

# Passed to every git command: no signing prompts, no rerere "resolutions" that
# hide a conflict, no colour codes in parsed output, no background gc.
_SAFE_CONFIG = (
    "-c",
    "commit.gpgSign=false",
    "-c",
    "rerere.enabled=false",
    "-c",
    "color.ui=false",
    "-c",
    "gc.auto=0",
)
# For cw's own commits and merges: --no-verify skips pre-commit and commit-msg,
# but prepare-commit-msg and pre-merge-commit hooks can still fail a commit.
_NO_HOOKS = ("-c", "core.hooksPath=/dev/null")
_DIFF_FLAGS = ("--no-ext-diff", "--no-color")


@dataclass(frozen=True)
class MergeOutcome:
    """What :func:`merge_branch` did."""

    merged: bool
    sha: str | None  # new integration sha when merged
    conflict_files: list[str]  # when not merged because of conflicts
    output: str  # git's output, for the log
    rejected: bool = False  # merged cleanly, but the check refused the result
    already_merged: bool = False  # the branch brought nothing new: no merge commit was made


@dataclass(frozen=True)
class _Result:
    status: int
    out: str
    err: str


@dataclass(frozen=True)
class _Worktree:
    path: Path
    branch: str | None  # short branch name; None when detached
    main: bool
    locked: str | None = None  # the lock's reason ("" without one); None when unlocked


# -- running git -------------------------------------------------------------


def _git(
    cwd: Path, *args: str, env: Mapping[str, str] | None = None, strip: bool = True
) -> _Result:
    """Run git in ``cwd`` and return its status and output; never raises on failure."""
    if not cwd.is_dir():
        raise GitError(f"cannot run git {args[0]}: {cwd} is not a directory")
    status, out, err = git.Git(str(cwd)).execute(
        ["git", *_SAFE_CONFIG, *args],
        with_extended_output=True,
        with_exceptions=False,
        env=env,
        strip_newline_in_stdout=strip,
    )
    return _Result(status, out, err)


def _run(cwd: Path, *args: str, env: Mapping[str, str] | None = None, strip: bool = True) -> str:
    """Run git in ``cwd`` and return its stdout; raise :class:`GitError` on failure."""
    result = _git(cwd, *args, env=env, strip=strip)
    if result.status != 0:
        raise GitError(_failure(args, result))
    return result.out


def _failure(args: tuple[str, ...], result: _Result) -> str:
    """One line saying which git command failed, in git's own words."""
    command = next(arg for arg in args if not arg.startswith("-") and "=" not in arg)
    lines = [line.strip() for line in result.err.splitlines() if line.strip()]
    fatal = [line for line in lines if line.startswith(("fatal:", "error:"))]
    reason = (fatal or lines or [f"exit status {result.status}"])[0]
    return f"git {command} failed: {reason}"


def _identity(author: str | None = None) -> dict[str, str]:
    """cw's identity as environment variables: works with no git identity configured."""
    return {
        "GIT_AUTHOR_NAME": author or CW_GIT_NAME,
        "GIT_AUTHOR_EMAIL": CW_GIT_EMAIL,
        "GIT_COMMITTER_NAME": CW_GIT_NAME,
        "GIT_COMMITTER_EMAIL": CW_GIT_EMAIL,
    }


def _names(output: str) -> list[str]:
    """Split ``-z`` output into names."""
    return [name for name in output.split("\0") if name]


# -- repositories, refs and the lock ------------------------------------------


def repo_root(path: Path) -> Path:
    """The top of the working tree containing ``path``."""
    start = path
    while not start.is_dir() and start != start.parent:
        start = start.parent
    result = _git(start, "rev-parse", "--show-toplevel")
    if result.status != 0 or not result.out:
        raise NotAGitRepository(f"{path} is not inside a git repository; run cw init in one")
    return Path(result.out)


def git_common_dir(repo: Path) -> Path:
    """The repository's shared git directory (cached: it never moves while cw runs)."""
    return _common_dir(str(repo))


@functools.lru_cache(maxsize=64)
def _common_dir(repo: str) -> Path:
    return Path(_run(Path(repo), "rev-parse", "--path-format=absolute", "--git-common-dir"))


@contextmanager
def repo_lock(repo: Path) -> Iterator[None]:
    """Hold cw's exclusive lock on ``repo`` (a ``flock``, so it spans processes)."""
    with file_lock(git_common_dir(repo) / GIT_LOCK_FILE):
        yield


def prepare_repository(repo: Path) -> None:
    """Turn off background gc, which prunes worktrees and packs refs under cw's feet."""
    _run(repo, "config", "--local", "gc.auto", "0")


def _rev(repo: Path, ref: str) -> str | None:
    """The commit sha ``ref`` names, or None if it names nothing."""
    result = _git(repo, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")
    if result.status == 0:
        return result.out
    if result.status == 1:
        return None
    raise GitError(_failure(("rev-parse",), result))


def head_sha(repo: Path) -> str | None:
    """The sha of HEAD, or None for an unborn HEAD (a repository with no commits)."""
    return _rev(repo, "HEAD")


def branch_sha(repo: Path, branch: str) -> str | None:
    """The sha of ``refs/heads/<branch>``, or None if the branch does not exist."""
    return _rev(repo, f"refs/heads/{branch}")


def ensure_branch(repo: Path, branch: str, start: str) -> str:
    """Create ``branch`` at ``start`` (a sha or ref) unless it exists; return its sha."""
    with repo_lock(repo):
        existing = branch_sha(repo, branch)
        if existing is not None:
            return existing
        sha = _run(repo, "rev-parse", "--verify", f"{start}^{{commit}}")
        _run(repo, "branch", "--no-track", branch, sha)
        logger.info("created branch %s at %s", branch, sha)
        return sha


def is_valid_branch_name(repo: Path, name: str) -> bool:
    """What git accepts as a new branch name (``git check-ref-format --branch``)."""
    return _git(repo, "check-ref-format", "--branch", name).status == 0


def exclude_path(repo: Path, pattern: str) -> None:
    """Git-ignore ``pattern`` through ``info/exclude``, leaving the user's .gitignore alone."""
    with repo_lock(repo):
        exclude = git_common_dir(repo) / "info" / "exclude"
        exclude.parent.mkdir(parents=True, exist_ok=True)
        text = exclude.read_text(encoding="utf-8") if exclude.exists() else ""
        if pattern in text.splitlines():
            return
        separator = "" if not text or text.endswith("\n") else "\n"
        with exclude.open("a", encoding="utf-8") as handle:
            handle.write(f"{separator}{pattern}\n")


def is_ancestor(repo: Path, commit: str, of: str) -> bool:
    """Whether ``commit`` is ``of`` or one of its ancestors."""
    result = _git(repo, "merge-base", "--is-ancestor", commit, of)
    if result.status in (0, 1):
        return result.status == 0
    raise GitError(_failure(("merge-base",), result))


# -- worktrees ---------------------------------------------------------------


def _worktrees(repo: Path) -> list[_Worktree]:
    """The worktrees registered in ``repo``, the main one first."""
    found: list[_Worktree] = []
    path: Path | None = None
    branch: str | None = None
    locked: str | None = None
    for line in [*_run(repo, "worktree", "list", "--porcelain", "-z").split("\0"), ""]:
        if line.startswith("worktree "):
            path = Path(line.removeprefix("worktree "))
        elif line.startswith("branch "):
            branch = line.removeprefix("branch ").removeprefix("refs/heads/")
        elif line == "locked" or line.startswith("locked "):
            locked = line.removeprefix("locked").strip()
        elif not line and path is not None:
            found.append(_Worktree(path, branch, main=not found, locked=locked))
            path, branch, locked = None, None, None
    return found


def _find_worktree(repo: Path, path: Path) -> _Worktree | None:
    wanted = path.resolve()
    return next((wt for wt in _worktrees(repo) if wt.path.resolve() == wanted), None)


def add_worktree(repo: Path, path: Path, branch: str, base_sha: str) -> None:
    """Check ``branch`` out at ``path``, creating the branch at ``base_sha`` if it is new.

    Idempotent; a worktree whose directory was deleted is re-created from its
    branch, so a resumed task finds its committed work. What a killed git left is repaired
    first: a half-made worktree is rebuilt from its branch, stale lock files are removed.
    """
    with repo_lock(repo):
        _run(repo, "worktree", "prune")
        existing = _find_worktree(repo, path)
        if existing is not None and _half_made(existing, _admin_dir(repo, path)):
            logger.warning("rebuilding %s: its git worktree add was killed", path)
            _dismantle(repo, path)
            existing = None
        _empty_trash(path.parent)
        remove_stale_locks([*_admin_locks(repo, path), _ref_lock(repo, branch)])
        if existing is not None:
            if existing.branch == branch:
                return
            on = existing.branch or "a detached HEAD"
            raise GitError(f"{path} is already a worktree on {on}, not on {branch}")
        if branch_sha(repo, branch) is not None:
            _run(repo, "worktree", "add", str(path), branch)
        else:
            _run(repo, "worktree", "add", "--no-track", "-b", branch, str(path), base_sha)
    logger.info("worktree %s on %s", path, branch)


def _half_made(entry: _Worktree, admin: Path | None) -> bool:
    """Whether ``git worktree add`` of this worktree (``admin``: its directory in
    ``.git/worktrees``) never finished: git keeps a new worktree locked ("initializing") until
    its checkout is complete, and writes its index last."""
    return entry.locked is not None and admin is not None and not (admin / "index").exists()


def half_made_worktrees(repo: Path, under: Path) -> list[Path]:
    """The worktrees under ``under`` whose ``git worktree add`` was killed part-way."""
    root, admins = under.resolve(), _admin_dirs(repo)
    return [
        wt.path
        for wt in _worktrees(repo)
        if not wt.main
        and wt.path.resolve().is_relative_to(root)
        and _half_made(wt, admins.get(wt.path.resolve()))
    ]


def discard_half_made(repo: Path, path: Path) -> bool:
    """Remove the worktree at ``path`` if its ``git worktree add`` was killed (nothing was ever
    done in it; its branch stays); False when it is whole (it may have been finished meanwhile)."""
    with repo_lock(repo):  # every `git worktree add` of cw holds it: none is under way now
        entry = _find_worktree(repo, path)
        if entry is None or not _half_made(entry, _admin_dir(repo, path)):
            return False
        _dismantle(repo, path)
    logger.info("removed half-made worktree %s", path)
    return True


def empty_trash(repo: Path, parent: Path) -> None:
    """Delete what killed removals left in ``parent``'s trash."""
    with repo_lock(repo):
        _empty_trash(parent)


def _dismantle(repo: Path, path: Path) -> None:
    """Take a worktree away so that a kill at any instant leaves either the worktree as it was
    or a directory in the trash: one rename moves it aside, git prunes its entry (its
    directory is gone), then the copy in the trash is deleted. Hold :func:`repo_lock`."""
    _git(repo, "worktree", "unlock", str(path))
    if path.exists():
        trash = path.parent / WORKTREE_TRASH_DIR
        trash.mkdir(exist_ok=True)
        path.rename(trash / f"{path.name}.{os.getpid()}.{time.time_ns()}")
    _run(repo, "worktree", "prune")
    _empty_trash(path.parent)


def _empty_trash(parent: Path) -> None:
    """Delete what removals of worktrees in ``parent`` left in its trash (their work is
    committed: only a worktree already on its branch is ever moved there)."""
    trash = parent / WORKTREE_TRASH_DIR
    if trash.is_dir():
        shutil.rmtree(trash, ignore_errors=True)


def trash_entries(parent: Path) -> list[Path]:
    """Worktrees a killed removal left half-deleted in ``parent``'s trash (not those a live
    process is deleting right now: each entry's name carries its remover's pid)."""
    trash = parent / WORKTREE_TRASH_DIR
    entries = sorted(trash.iterdir()) if trash.is_dir() else []
    return [entry for entry in entries if not _remover_alive(entry.name)]


def _remover_alive(name: str) -> bool:
    """Whether the process named in a trash entry ``<worktree>.<pid>.<ns>`` still runs."""
    parts = name.rsplit(".", 2)
    if len(parts) != 3 or not parts[1].isdigit():
        return False
    try:
        os.kill(int(parts[1]), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _admin_dirs(repo: Path) -> dict[Path, Path]:
    """Each registered worktree's path (resolved) and its directory in ``.git/worktrees`` (whose
    ``gitdir`` file names ``<path>/.git``)."""
    found = {}
    for gitdir in (git_common_dir(repo) / "worktrees").glob("*/gitdir"):
        try:
            found[Path(gitdir.read_text(encoding="utf-8").strip()).parent.resolve()] = gitdir.parent
        except OSError:
            continue
    return found


def _admin_dir(repo: Path, path: Path) -> Path | None:
    return _admin_dirs(repo).get(path.resolve())


def _admin_locks(repo: Path, path: Path) -> list[Path]:
    admin = _admin_dir(repo, path)
    return sorted(admin.glob("*.lock")) if admin is not None else []


def _ref_lock(repo: Path, branch: str) -> Path:
    return git_common_dir(repo) / "refs" / "heads" / f"{branch}.lock"


def git_lock_files(repo: Path, under: Path, branch_prefix: str) -> list[Path]:
    """Git's lock files in cw's part of ``repo``: those of the worktrees under ``under`` and of
    the branches named ``branch_prefix...``."""
    root = under.resolve()
    found = [
        lock
        for path, admin in _admin_dirs(repo).items()
        if path.is_relative_to(root)
        for lock in admin.glob("*.lock")
    ]
    refs = git_common_dir(repo) / "refs" / "heads" / branch_prefix
    return sorted({*found, *refs.glob("**/*.lock")})


def stale_locks(locks: list[Path]) -> list[Path]:
    """The lock files of ``locks`` a killed git left: older than ``GIT_LOCK_STALE_SECONDS`` (git
    closes a lock file just before it renames it) and open in no process."""
    now = time.time()
    old = [p for p in locks if _age(p, now) > GIT_LOCK_STALE_SECONDS]
    held = _open_files() if old else set()
    return [p for p in old if held is not None and str(p.resolve()) not in held]


def remove_stale_locks(locks: list[Path]) -> list[Path]:
    """Delete the stale ones of ``locks`` (:func:`stale_locks`); return what was deleted."""
    removed = []
    for lock in stale_locks(locks):
        logger.warning("removing %s: left by a git that was killed", lock)
        lock.unlink(missing_ok=True)
        removed.append(lock)
    return removed


def _age(path: Path, now: float) -> float:
    try:
        return now - path.stat().st_mtime
    except OSError:
        return -1.0  # gone: nothing to remove


def _open_files() -> set[str] | None:
    """Every file some process on this host has open (the processes this user may look at);
    None without ``/proc``, where no lock can be known to be stale."""
    if not Path("/proc/self/fd").is_dir():
        return None
    found: set[str] = set()
    for fd_dir in Path("/proc").glob("[0-9]*/fd"):
        try:
            fds = list(fd_dir.iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                found.add(os.readlink(fd))
            except OSError:
                continue
    return found


def is_dirty(worktree: Path) -> bool:
    """Whether ``worktree`` has uncommitted changes, untracked files included."""
    return bool(_run(worktree, "status", "--porcelain", "--untracked-files=all"))


def commit_all(worktree: Path, message: str, author: str | None = None) -> str | None:
    """Commit everything in ``worktree``; return the new sha, or None if it was clean."""
    _run(worktree, "add", "-A")
    staged = _git(worktree, "diff", "--cached", "--quiet")
    if staged.status == 0:
        return None
    if staged.status != 1:
        raise GitError(_failure(("diff",), staged))
    env = _identity(author)
    _run(worktree, *_NO_HOOKS, "commit", "--no-verify", "--quiet", "-m", message, env=env)
    return _run(worktree, "rev-parse", "HEAD")


def remove_worktree(repo: Path, path: Path, *, force_commit_message: str = "cw: WIP") -> None:
    """Remove the worktree at ``path`` after committing any uncommitted work to its branch.

    A kill part-way leaves the worktree whole, or its copy in the trash (never a half-deleted
    worktree that a later attempt would take for its work); ``add_worktree`` and
    ``cw doctor --fix`` empty the trash."""
    entry = _find_worktree(repo, path)
    if entry is not None and entry.main:
        raise GitError(f"{path} is the main worktree of {repo}; cw never removes it")
    if entry is None and path.exists():
        raise GitError(f"{path} is not a worktree of {repo}; left in place")
    if entry is not None and path.exists() and not _half_made(entry, _admin_dir(repo, path)):
        with repo_lock(repo):
            remove_stale_locks(_admin_locks(repo, path))
        _commit_before_removal(entry, force_commit_message)
    with repo_lock(repo):
        _dismantle(repo, path)
    logger.info("removed worktree %s", path)


def _commit_before_removal(entry: _Worktree, message: str) -> None:
    if not is_dirty(entry.path):
        return
    sha = commit_all(entry.path, message)
    if entry.branch is None:
        logger.warning("committed work in detached worktree %s as %s", entry.path, sha)
    else:
        logger.info("committed work in %s to %s as %s", entry.path, entry.branch, sha)


# -- diffs -------------------------------------------------------------------


def changed_files(repo: Path, base: str, head: str) -> list[str]:
    """The files ``head`` changes since its merge base with ``base``."""
    return _names(_run(repo, "diff", *_DIFF_FLAGS, "--name-only", "-z", f"{base}...{head}", "--"))


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
        return _run(repo, "diff", *_DIFF_FLAGS, *fmt, f"{base}...{branch}", "--", strip=False)
    raise ValueError("diff needs exactly one of worktree= or branch=")


def _worktree_diff(worktree: Path, base: str, fmt: tuple[str, ...]) -> str:
    """Diff ``base`` against the working tree, staging into a throwaway index."""
    merge_base = _git(worktree, "merge-base", base, "HEAD")
    start = merge_base.out if merge_base.status == 0 else base
    real_index = Path(_run(worktree, "rev-parse", "--path-format=absolute", "--git-path", "index"))
    with tempfile.TemporaryDirectory(prefix="cw-index-") as tmp:
        index = Path(tmp) / "index"
        if real_index.exists():
            shutil.copyfile(real_index, index)  # its stat data saves re-hashing files
        env = {"GIT_INDEX_FILE": str(index)}
        _run(worktree, "add", "-A", env=env)
        return _run(
            worktree, "diff", "--cached", *_DIFF_FLAGS, *fmt, start, "--", env=env, strip=False
        )


# -- merging -----------------------------------------------------------------


@dataclass
class MergedTree:
    """A merge commit that no branch points at yet; the check decides whether one will.

    ``checkout()`` puts the merged tree in the integration worktree (detached, spotless) for
    checks that need files on disk; merges that need no such check never touch a worktree.
    """

    repo: Path
    old: str  # the integration branch's tip before the merge
    source: str  # the commit merged in
    new: str  # the merge commit
    worktree: Path
    auto_merged: list[str] | None = None  # paths git merged line by line; None: not known
    checked_out: bool = False

    def checkout(self) -> Path:
        _ensure_detached_worktree(self.repo, self.worktree, self.new)
        _reset_worktree(self.worktree, self.new)
        self.checked_out = True
        return self.worktree


#: ``check(merged)``: True lets the integration branch advance to ``merged.new``.
Check = Callable[[MergedTree], bool]


def merge_branch(
    repo: Path,
    integration_worktree: Path,
    integration_branch: str,
    branch: str,
    message: str,
    check: Check | None = None,
    *,
    rerere: bool = False,
) -> MergeOutcome:
    """Merge ``branch`` into ``integration_branch`` without touching any checkout.

    ``git merge-tree --write-tree`` merges in the object database and ``commit-tree`` records
    the result; ``check`` sees it before the branch moves (False leaves the branch where it
    was: ``rejected``), and the branch ref moves only by a compare-and-set. The caller runs one
    merge at a time. With ``rerere``, conflicts are merged again in the detached integration
    worktree with git's recorded resolutions; what they resolve completely counts as merged.
    """
    old, source, old_tree = _merge_inputs(repo, integration_branch, branch)
    flags = ("--write-tree", "--messages", "--name-only", "-z")
    result = _git(repo, "merge-tree", *flags, old, source, strip=False)
    if result.status not in (0, 1):
        raise GitError(_failure(("merge-tree",), result))
    done = _parse_merge_tree(result.out)
    if not done.conflicts and done.tree == old_tree and is_ancestor(repo, source, old):
        note = f"{branch} is already merged into {integration_branch}"
        unchanged = MergedTree(repo, old, source, old, integration_worktree, [])
        return _already_merged(unchanged, check, note)
    merged: MergedTree | None = None
    if not done.conflicts:
        new = _commit_tree(repo, done.tree, old, source, message)
        _remember_tip(new, done.tree)
        merged = MergedTree(repo, old, source, new, integration_worktree, done.auto_merged)
    elif rerere:
        merged = _rerere_merge(repo, integration_worktree, old, source, message)
    if merged is None:
        return MergeOutcome(False, None, done.conflicts, done.messages)
    if check is not None and not check(merged):
        return _rejected(integration_worktree, merged, done.messages)
    _advance(repo, integration_branch, old, merged.new)
    logger.info("merged %s into %s: %s", branch, integration_branch, merged.new)
    return MergeOutcome(True, merged.new, [], done.messages)


def _already_merged(merged: MergedTree, check: Check | None, note: str) -> MergeOutcome:
    """Nothing to merge (the agent committed nothing, or a crashed merge already moved the
    branch): the check still decides, on the integration branch as it stands."""
    if check is not None and not check(merged):
        return _rejected(merged.worktree, merged, note)
    return MergeOutcome(True, merged.old, [], note, already_merged=True)


def _rejected(worktree: Path, merged: MergedTree, messages: str) -> MergeOutcome:
    """The check refused the result: the branch stays where it was, the worktree too."""
    if merged.checked_out:
        _reset_worktree(worktree, merged.old)
    return MergeOutcome(False, None, [], messages, rejected=True)


#: Trees of the merge commits this process made: the next merge's tip needs no git call.
_TIP_TREES: dict[str, str] = {}
_TIP_TREES_KEPT = 16
_SHA = re.compile(r"[0-9a-f]{40}([0-9a-f]{24})?")


def _merge_inputs(repo: Path, integration_branch: str, branch: str) -> tuple[str, str, str]:
    """The integration tip, the commit to merge and the tip's tree.

    Read from the loose ref files when the tip is cw's own last merge (the common case of a
    merge worker draining its queue); otherwise from one ``git rev-parse``.
    """
    ref = f"refs/heads/{integration_branch}"
    old = _loose_ref(repo, ref)
    source = _loose_ref(repo, branch if branch.startswith("refs/") else f"refs/heads/{branch}")
    if old is not None and source is not None and old in _TIP_TREES:
        return old, source, _TIP_TREES[old]
    result = _git(repo, "rev-parse", f"{ref}^{{commit}}", f"{branch}^{{commit}}", f"{ref}^{{tree}}")
    shas = result.out.split()
    if result.status == 0 and len(shas) == 3:
        return shas[0], shas[1], shas[2]
    if branch_sha(repo, integration_branch) is None:
        raise GitError(f"integration branch {integration_branch} does not exist")
    raise GitError(f"nothing to merge: {branch} names no commit")


def _loose_ref(repo: Path, ref: str) -> str | None:
    """The sha in a loose ref file; None when the ref is packed, symbolic or absent (ask git).

    Git replaces ref files by rename under a lock, so a read never sees half a sha."""
    try:
        text = (git_common_dir(repo) / ref).read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return text if _SHA.fullmatch(text) else None


def _remember_tip(new: str, tree: str) -> None:
    if len(_TIP_TREES) >= _TIP_TREES_KEPT:
        _TIP_TREES.clear()
    _TIP_TREES[new] = tree


@dataclass(frozen=True)
class _TreeMerge:
    """What ``git merge-tree --write-tree --messages --name-only -z`` reported."""

    tree: str
    conflicts: list[str]
    auto_merged: list[str]  # paths both sides changed, merged line by line
    messages: str


def _parse_merge_tree(out: str) -> _TreeMerge:
    """``<tree> NUL <conflicted path> NUL ... NUL NUL`` then ``<n> <paths> <type> <message>``s."""
    fields = out.split("\0")
    end = fields.index("", 1) if "" in fields[1:] else len(fields)
    conflicts = sorted(set(fields[1:end]))
    auto_merged: list[str] = []
    messages: list[str] = []
    rest = fields[end + 1 :]
    while len(rest) > 1 and rest[0].isdigit():
        count = int(rest[0])
        paths, kind, message = rest[1 : count + 1], rest[count + 1], rest[count + 2]
        if kind == "Auto-merging":
            auto_merged += paths
        messages.append(message.strip())
        rest = rest[count + 3 :]
    return _TreeMerge(fields[0].strip(), conflicts, sorted(set(auto_merged)), "\n".join(messages))


def _commit_tree(repo: Path, tree: str, old: str, source: str, message: str) -> str:
    return _run(repo, "commit-tree", tree, "-p", old, "-p", source, "-m", message, env=_identity())


def _rerere_merge(
    repo: Path, worktree: Path, old: str, source: str, message: str
) -> MergedTree | None:
    """Merge in the integration worktree with rerere on; None unless it resolved everything."""
    _ensure_detached_worktree(repo, worktree, old)
    _reset_worktree(worktree, old)
    rerere = ("-c", "rerere.enabled=true", "-c", "rerere.autoUpdate=true")
    result = _git(worktree, *rerere, *_NO_HOOKS, "merge", "--no-ff", "--no-commit", source,
                  env=_identity())  # fmt: skip
    unresolved = _names(_run(worktree, "diff", "--name-only", "-z", "--diff-filter=U"))
    if result.status != 0 and (unresolved or conflict_markers(worktree)):
        _git(worktree, "merge", "--abort")
        _reset_worktree(worktree, old)
        return None
    tree = _run(worktree, "write-tree")
    _git(worktree, "merge", "--abort")
    new = _commit_tree(repo, tree, old, source, message)
    merged = MergedTree(repo, old, source, new, worktree)
    merged.checkout()
    logger.info("rerere resolved every conflict of merging %s", source)
    return merged


def _advance(repo: Path, branch: str, old: str, new: str) -> None:
    """Move ``branch`` from ``old`` to ``new``, refusing if it moved meanwhile."""
    with repo_lock(repo):
        ref = f"refs/heads/{branch}"
        result = _git(repo, "update-ref", "-m", f"cw: merge into {branch}", ref, new, old)
    if result.status != 0:
        now = branch_sha(repo, branch)
        raise GitError(
            f"{branch} moved from {old} to {now} during the merge, so it was not advanced "
            f"to {new}; merge again ({_failure(('update-ref',), result)})"
        )


def _is_worktree_top(path: Path) -> bool:
    """Whether ``path`` is itself the top of a working tree (not a directory inside one)."""
    if not path.is_dir():
        return False
    result = _git(path, "rev-parse", "--show-toplevel")
    return result.status == 0 and Path(result.out).resolve() == path.resolve()


def _ensure_detached_worktree(repo: Path, path: Path, sha: str) -> None:
    """Make ``path`` a usable worktree of ``repo``, adding it detached at ``sha`` if needed."""
    entry = _find_worktree(repo, path)
    if entry is not None and entry.main:
        raise GitError(f"{path} is the main worktree of {repo}; cw merges only in its own")
    if entry is not None and _is_worktree_top(path):
        return
    with repo_lock(repo):
        _discard_leftover(path, registered=entry is not None)
        _run(repo, "worktree", "prune")
        _run(repo, "worktree", "add", "--detach", str(path), sha)
    logger.info("created integration worktree %s at %s", path, sha)


def _discard_leftover(path: Path, *, registered: bool) -> None:
    """Delete the remains of a broken integration worktree; refuse anything else."""
    if not path.exists():
        return
    leftover = registered or (path / ".git").is_file() or not any(path.iterdir())
    if not leftover:
        raise GitError(f"{path} exists and is not a worktree; move it away")
    logger.warning("discarding broken integration worktree %s", path)
    shutil.rmtree(path)


def _reset_worktree(worktree: Path, sha: str) -> None:
    """Put ``worktree`` at ``sha``, detached and spotless, whatever a crash left behind."""
    lock = Path(_run(worktree, "rev-parse", "--path-format=absolute", "--git-path", "index.lock"))
    if lock.exists():  # merges are serialised, so this lock outlived a crashed merge
        logger.warning("removing stale %s", lock)
        lock.unlink()
    _run(worktree, "checkout", "--quiet", "--detach", "--force", sha)
    _run(worktree, "reset", "--quiet", "--hard", sha)
    _run(worktree, "clean", "-ffdxq")


def merge_into_worktree(
    worktree: Path, commit: str, message: str, *, rerere: bool = False
) -> list[str]:
    """Merge ``commit`` into the worktree's branch (a bounced task catching up).

    A clean merge is committed; on conflicts the merge is left in progress, markers in the
    files, for the agent to resolve; the conflicting paths are returned. With ``rerere``, git
    records the conflicts (and replays resolutions it already knows).
    """
    config = ("-c", "rerere.enabled=true") if rerere else ()
    result = _git(worktree, *config, *_NO_HOOKS, "merge", "--no-ff", "--no-edit", "-m", message,
                  commit, env=_identity())  # fmt: skip
    if result.status == 0:
        return []
    conflicts = _names(_run(worktree, "diff", "--name-only", "-z", "--diff-filter=U"))
    if not conflicts:
        raise GitError(_failure(("merge",), result))
    return conflicts


#: For an agent's own git commands when the rerere rule is on: its commit of a resolved
#: conflict records the resolution in the shared ``rr-cache`` for the merge worker to replay.
RERERE_ENV = {
    "GIT_CONFIG_COUNT": "1",
    "GIT_CONFIG_KEY_0": "rerere.enabled",
    "GIT_CONFIG_VALUE_0": "true",
}


def record_resolutions(worktree: Path) -> None:
    """Record the conflicts resolved in ``worktree`` (``git rerere``); a no-op without any."""
    _git(worktree, "-c", "rerere.enabled=true", "rerere")


def conflict_markers(worktree: Path) -> list[str]:
    """Files that still hold conflict markers (unmerged index entries alone do not count:
    cw's own ``git add -A`` concludes a merge whose files were resolved)."""
    grep = _git(worktree, "grep", "-l", "-z", "-E", "^(<<<<<<<|>>>>>>>)( |$)", "--", ".")
    return sorted(_names(grep.out)) if grep.status == 0 else []


def log_subjects(repo: Path, base: str, head: str, paths: list[str]) -> list[str]:
    """Commit subjects in ``base..head`` that touched ``paths`` (first parent only)."""
    out = _run(repo, "log", "--first-parent", "--format=%s", f"{base}..{head}", "--", *paths)
    return [line for line in out.splitlines() if line.strip()]


# -- housekeeping (cw gc, cw doctor) -------------------------------------------


@dataclass(frozen=True)
class WorktreeEntry:
    """A worktree git knows: its path, its branch (None when detached), whether it is main."""

    path: Path
    branch: str | None
    main: bool


def list_worktrees(repo: Path) -> list[WorktreeEntry]:
    """Every worktree registered in ``repo``, the main one first (missing directories too)."""
    return [WorktreeEntry(wt.path, wt.branch, wt.main) for wt in _worktrees(repo)]


def list_branches(repo: Path, prefix: str) -> dict[str, str]:
    """Local branches whose names start with ``prefix``, each with its sha."""
    pattern = f"refs/heads/{prefix.rstrip('/')}"
    out = _run(repo, "for-each-ref", "--format=%(objectname) %(refname:lstrip=2)", pattern)
    pairs = (line.split(" ", 1) for line in out.splitlines() if line.strip())
    return {name: sha for sha, name in pairs if name.startswith(prefix)}


def delete_branch(repo: Path, branch: str, sha: str) -> bool:
    """Delete ``branch`` only if it still points at ``sha`` and no worktree has it checked out.

    False when it moved or is checked out meanwhile (it is then left alone).
    """
    with repo_lock(repo):
        if any(wt.branch == branch and wt.path.exists() for wt in _worktrees(repo)):
            return False
        ref = f"refs/heads/{branch}"
        result = _git(repo, "update-ref", "-m", "cw gc", "-d", ref, sha)
    if result.status == 0:
        logger.info("deleted branch %s at %s", branch, sha)
        return True
    if branch_sha(repo, branch) != sha:
        return False
    raise GitError(_failure(("update-ref",), result))


def prune_worktrees(repo: Path, *, dry_run: bool = False) -> list[str]:
    """``git worktree prune`` (under the lock): what it pruned, or would, in git's words."""
    if dry_run:
        result = _git(repo, "worktree", "prune", "--dry-run", "--verbose")
    else:
        with repo_lock(repo):
            result = _git(repo, "worktree", "prune", "--verbose")
    if result.status != 0:
        raise GitError(_failure(("worktree",), result))
    return [line.strip() for line in f"{result.out}\n{result.err}".splitlines() if line.strip()]


def commit_exists(repo: Path, sha: str) -> bool:
    """Whether ``sha`` names a commit present in ``repo``."""
    return _rev(repo, sha) is not None


def count_commits(repo: Path, head: str, not_in: str) -> int:
    """How many commits ``head`` has that ``not_in`` has not."""
    return int(_run(repo, "rev-list", "--count", f"{not_in}..{head}"))


def parents(repo: Path, sha: str) -> list[str]:
    """The parents of commit ``sha``, the first parent first."""
    return _run(repo, "rev-list", "--parents", "-n", "1", sha).split()[1:]


def first_parent_diff(repo: Path, sha: str, *, stat: bool = False) -> str:
    """What commit ``sha`` changed against its first parent (for a merge: what it brought)."""
    fmt = ("--stat",) if stat else ()
    return _run(repo, "diff", *_DIFF_FLAGS, *fmt, f"{sha}^1", sha, "--", strip=False)


UNION_BEGIN = "# cw: union merge (merge_union setting) begin"
UNION_END = "# cw: union merge end"


def set_union_merge(repo: Path, globs: list[str]) -> None:
    """Merge files matching ``globs`` with git's ``union`` driver (both sides' lines kept).

    Written to ``info/attributes`` in the git common dir, between cw's own markers, so the
    user's attributes and checkout are untouched and every worktree sees it.
    """
    path = git_common_dir(repo) / "info" / "attributes"
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    if UNION_BEGIN in text:
        head, _, rest = text.partition(UNION_BEGIN)
        text = head + rest.partition(UNION_END)[2].lstrip("\n")
    block = "".join(f"{glob} merge=union\n" for glob in globs)
    if not block and UNION_BEGIN not in (path.read_text(encoding="utf-8") if path.exists() else ""):
        return  # nothing configured, nothing to undo: the common case costs no write
    if block:
        text = text.rstrip("\n") + ("\n" if text.strip() else "")
        text += f"{UNION_BEGIN}\n{block}{UNION_END}\n"
    with repo_lock(repo):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")


# -- a shared bare repository ("hub") for workers on several machines -------------------

HUB_NAMESPACE = "refs/cw-hub/heads/"


#: A fetch reads every worktree's HEAD, and `git worktree add` writes a placeholder HEAD (the
#: null id) before the real one: a fetch during another agent's worktree add fails with
#: "bad object worktrees/<name>/HEAD". That is over in moments, so the fetch is tried again.
FETCH_RETRY_PAUSES = (0.1, 0.2, 0.4, 0.8, 1.6)


def fetch_branch(repo: Path, hub: str, branch: str, into: str) -> bool:
    """Force-fetch ``branch`` from ``hub`` into the ref ``into``; False if the hub lacks it."""
    pauses = iter(FETCH_RETRY_PAUSES)
    while True:
        result = _git(repo, "fetch", "--no-tags", "--quiet", hub, f"+refs/heads/{branch}:{into}")
        if result.status == 0:
            return True
        if "couldn't find remote ref" in result.err:
            return False
        pause = next(pauses, None)
        if pause is None or not _half_made_worktree(result.err):
            raise GitError(_failure(("fetch",), result))
        time.sleep(pause)


def _half_made_worktree(err: str) -> bool:
    return "bad object worktrees/" in err and "/HEAD" in err


def push_branch(repo: Path, hub: str, source: str, branch: str, expect: str | None = None) -> None:
    """Push ``source`` to the hub's ``branch``; with ``expect``, only if the hub still has it."""
    lease = [f"--force-with-lease=refs/heads/{branch}:{expect}"] if expect else ["--force"]
    result = _git(repo, "push", "--quiet", *lease, hub, f"{source}:refs/heads/{branch}")
    if result.status != 0:
        raise GitError(_failure(("push",), result))


def hub_ref(branch: str) -> str:
    """Where a merge worker keeps its fetched copy of a task branch."""
    return HUB_NAMESPACE + branch


def ref_sha(repo: Path, ref: str) -> str | None:
    """The commit sha of a full ref name (``refs/...``), or None if it names nothing."""
    return _rev(repo, ref)


def task_worktree(worktree_dir: Path, branch: str, prefix: str) -> Path:
    """This host's path for a task branch's worktree: a path is one clone's own business, so
    another host's record of where it kept the worktree is never used here."""
    return worktree_dir / branch.removeprefix(prefix).replace("/", "-")


def take_hub_branch(repo: Path, hub: str, branch: str, worktree: Path) -> str | None:
    """Bring the hub's copy of a task branch here when it is ahead of the local one (another
    host worked on the task since): the local branch, or the clean worktree at ``worktree``
    that has it checked out, moves forward to it. Local commits the hub lacks are never
    dropped (both moved: the local branch stays). Returns the hub's sha; None when the hub
    has no such branch."""
    copy = hub_ref(branch)
    if not fetch_branch(repo, hub, branch, copy):
        return None
    theirs, ours = _rev(repo, copy), branch_sha(repo, branch)
    if theirs is None or ours == theirs:
        return theirs
    if ours is not None and not is_ancestor(repo, ours, theirs):
        if not is_ancestor(repo, theirs, ours):
            logger.warning("%s moved here and on the hub; the local branch stays", branch)
        return theirs
    entry = _find_worktree(repo, worktree)
    if entry is not None and entry.branch == branch and worktree.is_dir():
        if is_dirty(worktree):
            logger.warning("%s has uncommitted work: not moved to the hub's %s", worktree, branch)
        else:
            _run(worktree, "merge", "--ff-only", "--quiet", theirs)
        return theirs
    with repo_lock(repo):
        ref = f"refs/heads/{branch}"
        _run(repo, "update-ref", "-m", "cw: from the hub", ref, theirs, ours or "")
    return theirs


def hub_branches(repo: Path, hub: str, prefix: str) -> dict[str, str]:
    """The hub's branches whose names start with ``prefix``, each with its sha."""
    out = _run(repo, "ls-remote", "--heads", hub, f"refs/heads/{prefix}*")
    pairs = (line.split("\t", 1) for line in out.splitlines() if "\t" in line)
    found = {ref.removeprefix("refs/heads/"): sha for sha, ref in pairs}
    return {name: sha for name, sha in found.items() if name.startswith(prefix)}


def delete_hub_branch(repo: Path, hub: str, branch: str, sha: str) -> bool:
    """Delete the hub's ``branch`` only if it still points at ``sha``; False when it moved."""
    lease = f"--force-with-lease=refs/heads/{branch}:{sha}"
    result = _git(repo, "push", "--quiet", lease, hub, f":refs/heads/{branch}")
    if result.status == 0:
        logger.info("deleted the hub's branch %s at %s", branch, sha)
        return True
    if any(word in result.err for word in ("stale info", "rejected", "does not exist")):
        return False  # it moved, or another host's gc deleted it first
    raise GitError(_failure(("push",), result))


def hub_copies(repo: Path, prefix: str) -> dict[str, str]:
    """Fetched copies of the hub's branches named ``prefix...`` kept here (:func:`hub_ref`),
    by branch name, each with its sha."""
    pattern = HUB_NAMESPACE + prefix.rstrip("/")
    out = _run(repo, "for-each-ref", "--format=%(objectname) %(refname)", pattern)
    pairs = (line.split(" ", 1) for line in out.splitlines() if line.strip())
    found = {ref.removeprefix(HUB_NAMESPACE): sha for sha, ref in pairs}
    return {name: sha for name, sha in found.items() if name.startswith(prefix)}


def delete_hub_copy(repo: Path, branch: str, sha: str) -> bool:
    """Delete the fetched copy of the hub's ``branch`` if it still points at ``sha``."""
    with repo_lock(repo):
        result = _git(repo, "update-ref", "-m", "cw gc", "-d", hub_ref(branch), sha)
    return result.status == 0
