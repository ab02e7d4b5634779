"""Task worktrees: added, committed, removed, and cleaned up after a crash.

No work is ever lost: a worktree is removed only after its uncommitted changes are committed to
its branch.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from cw.defaults import WORKTREE_TRASH_DIR
from cw.errors import AgentError, GitError
from cw.git import nested
from cw.git.branches import branch_sha
from cw.git.runner import (
    NO_HOOKS,
    OBJECT_ID,
    call,
    failure,
    git_common_dir,
    identity,
    loose_ref,
    repo_lock,
    run,
)
from cw.git.stalelocks import remove_stale_locks

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Worktree:
    path: Path
    branch: str | None  # short branch name; None when detached
    main: bool
    locked: str | None = None  # the lock's reason ("" without one); None when unlocked


def _worktrees(repo: Path) -> list[_Worktree]:
    """The worktrees registered in ``repo``, the main one first."""
    found: list[_Worktree] = []
    path: Path | None = None
    branch: str | None = None
    locked: str | None = None
    for line in [*run(repo, "worktree", "list", "--porcelain", "-z").split("\0"), ""]:
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


def find_worktree(repo: Path, path: Path) -> _Worktree | None:
    wanted = path.resolve()
    return next((wt for wt in _worktrees(repo) if wt.path.resolve() == wanted), None)


def add_worktree(repo: Path, path: Path, branch: str, base_sha: str) -> None:
    """Check ``branch`` out at ``path``, creating the branch at ``base_sha`` if it is new.

    Idempotent; a worktree whose directory was deleted is re-created from its
    branch, so a resumed task finds its committed work. What a killed git left is repaired
    first: a half-made worktree is rebuilt from its branch, stale lock files are removed.
    """
    with repo_lock(repo):
        _empty_trash(path.parent)
        if not _added(repo, path, branch, base_sha):
            _repair_and_add(repo, path, branch, base_sha)
    logger.info("worktree %s on %s", path, branch)


def _added(repo: Path, path: Path, branch: str, base_sha: str) -> bool:
    """The usual case, at a cost that does not grow with the worktrees ``repo`` has: ``path``
    is new, and git adds it; or it is a whole worktree on ``branch`` already. False when
    anything else is found (or git fails): :func:`_repair_and_add` then looks closely."""
    if path.exists():
        whole = _whole_worktree(repo, path)
        if whole is None or whole[1].branch != branch:
            return False
        remove_stale_locks([*whole[0], _ref_lock(repo, branch)])
        return True
    try:
        # A branch without a loose ref is taken for new (no git asked): a packed one makes
        # `worktree add -b` fail, and the repair path asks git.
        new = loose_ref(repo, f"refs/heads/{branch}") is None
        _git_add(repo, path, branch, base_sha, new=new)
    except GitError as exc:  # a stale entry, a lock a killed git left: repaired, then again
        logger.debug("adding %s the quick way failed: %s", path, exc)
        return False
    return True


def _repair_and_add(repo: Path, path: Path, branch: str, base_sha: str) -> None:
    run(repo, "worktree", "prune")
    existing = find_worktree(repo, path)
    if existing is not None and _half_made(existing, _admin_dir(repo, path)):
        logger.warning("rebuilding %s: its git worktree add was killed", path)
        _dismantle(repo, path)
        existing = None
    remove_stale_locks([*_admin_locks(repo, path), _ref_lock(repo, branch)])
    if existing is not None:
        if existing.branch == branch:
            return
        on = existing.branch or "a detached HEAD"
        raise GitError(f"{path} is already a worktree on {on}, not on {branch}")
    _git_add(repo, path, branch, base_sha)


def _git_add(repo: Path, path: Path, branch: str, base_sha: str, *, new: bool = False) -> None:
    """``git worktree add`` of ``branch`` at ``path``, creating the branch at ``base_sha``
    unless it exists; ``new``: taken for new without asking git (if it is not, git fails)."""
    if not new and branch_sha(repo, branch) is not None:
        run(repo, "worktree", "add", str(path), branch)
    else:
        run(repo, "worktree", "add", "--no-track", "-b", branch, str(path), base_sha)


def _own_admin_dir(repo: Path, path: Path) -> Path | None:
    """The directory in ``repo``'s ``.git/worktrees`` of the worktree at ``path``, found from
    its ``.git`` file and checked against the ``gitdir`` file there that names it back; None
    if either is missing, they disagree, or it belongs to another repository."""
    try:
        text = (path / ".git").read_text(encoding="utf-8")
        admin = Path(text.removeprefix("gitdir:").strip())
        back = Path((admin / "gitdir").read_text(encoding="utf-8").strip())
    except OSError:
        return None
    mine = admin.parent.resolve() == (git_common_dir(repo) / "worktrees").resolve()
    return admin if mine and back.parent.resolve() == path.resolve() else None


def _branch_at(admin: Path) -> str | None:
    """The branch a worktree has checked out, from its ``HEAD`` (None when detached)."""
    try:
        head = (admin / "HEAD").read_text(encoding="utf-8").strip()
    except OSError:
        return None
    return head.removeprefix("ref: refs/heads/") if head.startswith("ref: ") else None


def _half_made(entry: _Worktree, admin: Path | None) -> bool:
    """Whether ``git worktree add`` of this worktree (``admin``: its directory in
    ``.git/worktrees``) never finished: git keeps a new worktree locked ("initializing") until
    its checkout is complete, and writes its index last."""
    return entry.locked is not None and admin is not None and _half_made_at(admin)


def _half_made_at(admin: Path) -> bool:
    return (admin / "locked").exists() and not (admin / "index").exists()


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
        entry = find_worktree(repo, path)
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
    admin = _own_admin_dir(repo, path) if path.exists() else None
    if admin is None or (admin / "locked").exists():  # `git worktree lock` writes that file
        call(repo, "worktree", "unlock", str(path))
    if path.exists():
        trash = path.parent / WORKTREE_TRASH_DIR
        trash.mkdir(exist_ok=True)
        path.rename(trash / f"{path.name}.{os.getpid()}.{time.time_ns()}")
    run(repo, "worktree", "prune")
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
    if len(parts) != 3 or not (parts[1].isascii() and parts[1].isdigit()):
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


def is_dirty(worktree: Path) -> bool:
    """Whether ``worktree`` has uncommitted changes, untracked files included."""
    return bool(run(worktree, "status", "--porcelain", "--untracked-files=all"))


def restore_tracked(worktree: Path) -> None:
    """Tracked files back as committed (untracked ones stay)."""
    run(worktree, "reset", "--hard", "--quiet")


def changed_tracked_files(worktree: Path) -> list[str]:
    """The files of ``worktree`` changed and not committed, untracked files left out (a
    check's build output); staged new files are in."""
    fields = iter(run(worktree, "status", "--porcelain", "-z", "--untracked-files=no").split("\0"))
    changed = []
    for field in fields:
        if len(field) > 3:
            changed.append(field[3:])
            if "R" in field[:2] or "C" in field[:2]:
                next(fields, None)  # a rename's or copy's old path
    return changed


def commit_all(
    worktree: Path, message: str, author: str | None = None, *, finished: bool = False
) -> str | None:
    """Commit everything in ``worktree``; return the new sha, or None if it was clean.

    ``finished``: the agent says its work is done, so a merge it left open with HEAD's tree
    (every conflict resolved in the task's favour) is its resolution, and is concluded: left
    open, the next merge would meet the same conflict. Work in progress concludes no such
    merge: nobody resolved it (a merge with changes is concluded, so that the work is kept on
    the branch; the conflicts are told again from the task's bounce). A finished commit is
    tried first and asks whether anything was staged only when it fails (one git process
    fewer on the usual path)."""
    embedded = nested.add_all(worktree)
    if embedded and finished:
        raise AgentError(nested.why(embedded))
    if embedded:  # work in progress: the rest is committed, the next attempt is told
        logger.warning("%s: %s", worktree, nested.why(embedded))
    if not finished and _nothing_staged(worktree):
        return None
    env = identity(author)
    done = call(worktree, *NO_HOOKS, "commit", "--no-verify", "--quiet", "-m", message, env=env)
    if done.status != 0:
        if finished and not merge_in_progress(worktree) and _nothing_staged(worktree):
            return None
        raise GitError(failure(("commit",), done))
    return head_file_sha(worktree) or run(worktree, "rev-parse", "HEAD")


def _nothing_staged(worktree: Path) -> bool:
    staged = call(worktree, "diff", "--cached", "--quiet")
    if staged.status not in (0, 1):
        raise GitError(failure(("diff",), staged))
    return staged.status == 0


def merge_in_progress(worktree: Path) -> bool:
    """Whether a merge is in progress in ``worktree``: a linked worktree's MERGE_HEAD is a file
    in its directory in ``.git/worktrees`` (no git process); anything unusual asks git."""
    admin = _admin_of(worktree)
    if admin is not None:
        return (admin / "MERGE_HEAD").is_file()
    return call(worktree, "rev-parse", "--quiet", "--verify", "MERGE_HEAD").status == 0


def _admin_of(worktree: Path) -> Path | None:
    """A linked worktree's directory in ``.git/worktrees``, named by its ``.git`` file."""
    try:
        text = (worktree / ".git").read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):  # a main worktree's .git is a directory
        return None
    admin = worktree / text.removeprefix("gitdir:").strip()  # relative to the worktree, if so
    return admin if text.startswith("gitdir:") and admin.is_dir() else None


def moves_on(worktree: Path, branch: str, since: float) -> list[str]:
    """What git's commands did in ``worktree`` since ``since`` (seconds) while its HEAD was on
    ``branch`` (a commit, a merge, a reset ...), as its HEAD's reflog records it: the moves
    this worktree made of that branch."""
    admin = _admin_of(worktree)
    on, moves = False, []
    for when, message in _reflog(admin / "logs" / "HEAD") if admin else []:
        if when < since:
            continue
        if message.startswith("checkout: moving from "):
            on = message.rpartition(" to ")[2] == branch
        elif on and message.startswith(_BY_GIT_COMMANDS):
            moves.append(message)
    return moves


def _reflog(path: Path) -> list[tuple[int, str]]:
    """The (time, message) of each entry of the reflog file ``path``; none when unreadable."""
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return []
    entries = []
    for line in lines:
        head, _, message = line.partition("\t")
        stamp = head.split()[-2:-1]
        if stamp and stamp[0].isdigit():
            entries.append((int(stamp[0]), message))
    return entries


#: How git's own commands name the moves they make in a reflog.
_BY_GIT_COMMANDS = ("commit", "merge", "reset", "rebase", "cherry-pick", "pull", "revert", "am")


def head_file_sha(worktree: Path) -> str | None:
    """The commit a linked worktree's HEAD names, read from the files git keeps for it (no git
    process); None when anything is unusual (a main worktree, a packed ref): ask git then."""
    admin = _admin_of(worktree)
    if admin is None:
        return None
    try:
        head = (admin / "HEAD").read_text(encoding="utf-8").strip()
        if head.startswith("ref: refs/heads/"):
            common = admin / (admin / "commondir").read_text(encoding="utf-8").strip()
            head = (common / head.removeprefix("ref: ")).read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return head if OBJECT_ID.fullmatch(head) else None


def remove_worktree(repo: Path, path: Path, *, force_commit_message: str = "cw: WIP") -> None:
    """Remove the worktree at ``path`` after committing any uncommitted work to its branch.

    A kill part-way leaves the worktree whole, or its copy in the trash (never a half-deleted
    worktree that a later attempt would take for its work); ``add_worktree`` and
    ``cw doctor --fix`` empty the trash."""
    whole = _whole_worktree(repo, path) or _checked_whole(repo, path)
    if whole is not None:
        locks, entry = whole
        with repo_lock(repo):
            remove_stale_locks(locks)
        _commit_before_removal(entry, force_commit_message)
    with repo_lock(repo):
        _dismantle(repo, path)
    logger.info("removed worktree %s", path)


def _whole_worktree(repo: Path, path: Path) -> tuple[list[Path], _Worktree] | None:
    """A whole linked worktree at ``path`` and its lock files, found without asking git about
    every worktree (the usual case of a removal); None if anything is unusual."""
    admin = _own_admin_dir(repo, path)
    if admin is None or _half_made_at(admin):
        return None
    return sorted(admin.glob("*.lock")), _Worktree(path, _branch_at(admin), main=False)


def _checked_whole(repo: Path, path: Path) -> tuple[list[Path], _Worktree] | None:
    """What git says of ``path``: a whole worktree and its lock files, or None when it is gone
    or half-made; refuses the main worktree and a directory git does not know."""
    entry = find_worktree(repo, path)
    if entry is not None and entry.main:
        raise GitError(f"{path} is the main worktree of {repo}; cw never removes it")
    if entry is None and path.exists():
        raise GitError(f"{path} is not a worktree of {repo}; left in place")
    if entry is None or not path.exists() or _half_made(entry, _admin_dir(repo, path)):
        return None
    return _admin_locks(repo, path), entry


def _commit_before_removal(entry: _Worktree, message: str) -> None:
    if not is_dirty(entry.path):
        return
    sha = commit_all(entry.path, message)
    if entry.branch is None:
        logger.warning("committed work in detached worktree %s as %s", entry.path, sha)
    else:
        logger.info("committed work in %s to %s as %s", entry.path, entry.branch, sha)


@dataclass(frozen=True)
class WorktreeEntry:
    """A worktree git knows: its path, its branch (None when detached), whether it is main."""

    path: Path
    branch: str | None
    main: bool


def list_worktrees(repo: Path) -> list[WorktreeEntry]:
    """Every worktree registered in ``repo``, the main one first (missing directories too)."""
    return [WorktreeEntry(wt.path, wt.branch, wt.main) for wt in _worktrees(repo)]


def delete_branch(repo: Path, branch: str, sha: str) -> bool:
    """Delete ``branch`` only if it still points at ``sha`` and no worktree has it checked out.

    False when it moved or is checked out meanwhile (it is then left alone).
    """
    with repo_lock(repo):
        if any(wt.branch == branch and wt.path.exists() for wt in _worktrees(repo)):
            return False
        ref = f"refs/heads/{branch}"
        result = call(repo, "update-ref", "-m", "cw gc", "-d", ref, sha)
    if result.status == 0:
        logger.info("deleted branch %s at %s", branch, sha)
        return True
    if branch_sha(repo, branch) != sha:
        return False
    raise GitError(failure(("update-ref",), result))


def prune_worktrees(repo: Path, *, dry_run: bool = False) -> list[str]:
    """``git worktree prune`` (under the lock): what it pruned, or would, in git's words."""
    if dry_run:
        result = call(repo, "worktree", "prune", "--dry-run", "--verbose")
    else:
        with repo_lock(repo):
            result = call(repo, "worktree", "prune", "--verbose")
    if result.status != 0:
        raise GitError(failure(("worktree",), result))
    return [line.strip() for line in f"{result.out}\n{result.err}".splitlines() if line.strip()]


def task_worktree(worktree_dir: Path, branch: str, prefix: str) -> Path:
    """This host's path for a task branch's worktree: a path is one clone's own business, so
    another host's record of where it kept the worktree is never used here."""
    return worktree_dir / branch.removeprefix(prefix).replace("/", "-")
