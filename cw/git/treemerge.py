"""Merging a branch into the integration branch.

The merge is made in the object database (``git merge-tree --write-tree``, then the merge
commit); a check may look at the merged tree in a detached integration worktree, never in the
user's checkout; a compare-and-set ``update-ref`` advances the branch.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from cw.errors import GitError
from cw.git import runner
from cw.git.branches import branch_sha, is_ancestor
from cw.git.kept import move_ref, write_commit
from cw.git.runner import call, nul_split, run
from cw.git.worktrees import find_worktree

logger = logging.getLogger(__name__)


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
        reset_worktree(self.worktree, self.new)
        self.checked_out = True
        return self.worktree


#: ``check(merged)``: True lets the integration branch advance to ``merged.new``.
Check = Callable[[MergedTree], bool]


@dataclass(frozen=True)
class Step:
    """One branch merged onto a commit in the object database (:func:`merge_onto`); no branch
    moved. ``merged`` is None when git left conflicts in ``conflicts``."""

    merged: MergedTree | None
    conflicts: list[str]
    messages: str  # git's messages, for the log
    already_merged: bool = False  # the branch brought nothing new: ``merged.new`` is the tip


def merge_onto(
    repo: Path, worktree: Path, tip: str, branch: str, message: str, *, rerere: bool = False
) -> Step:
    """Merge ``branch`` onto the commit ``tip`` without touching any checkout, moving nothing.

    ``git merge-tree --write-tree`` merges in the object database and a merge commit records
    the result; a check may look at it (:meth:`MergedTree.checkout`) before anything moves. A
    merge train (cw/git/train.py) chains such steps and publishes the last with :func:`advance`,
    a compare-and-set. With ``rerere``, conflicts are merged again in the detached integration
    worktree with git's recorded resolutions; what they resolve completely counts as merged.
    A branch that brings nothing new makes no merge commit (``already_merged``).
    """
    source = runner.loose_ref(
        repo, branch if branch.startswith("refs/") else f"refs/heads/{branch}"
    )
    tree = _TIP_TREES.get(tip)
    if source is None or tree is None:
        result = call(repo, "rev-parse", f"{branch}^{{commit}}", f"{tip}^{{tree}}")
        shas = result.out.split()
        if result.status != 0 or len(shas) != 2:
            raise GitError(f"nothing to merge: {branch} names no commit")
        source, tree = shas
    return _merge_step(repo, worktree, (tip, tree), source, message, rerere)


def tip_of(repo: Path, branch: str) -> str:
    """The commit ``branch`` points at (from its loose ref when it has one)."""
    sha = runner.loose_ref(repo, f"refs/heads/{branch}") or branch_sha(repo, branch)
    if sha is None:
        raise GitError(f"integration branch {branch} does not exist")
    return sha


def _merge_step(
    repo: Path, worktree: Path, tip: tuple[str, str], source: str, message: str, rerere: bool
) -> Step:
    """Merge ``source`` onto ``tip`` (its commit and tree) in the object database."""
    old, old_tree = tip
    flags = ("--write-tree", "--messages", "--name-only", "-z")
    result = call(repo, "merge-tree", *flags, old, source, strip=False)
    if result.status not in (0, 1):
        raise GitError(runner.failure(("merge-tree",), result))
    done = _parse_merge_tree(result.out)
    if not done.conflicts and done.tree == old_tree and is_ancestor(repo, source, old):
        unchanged = MergedTree(repo, old, source, old, worktree, [])
        note = f"nothing new to merge: {source[:12]} is already in {old[:12]}"
        return Step(unchanged, [], note, already_merged=True)
    if not done.conflicts:
        new = _commit_tree(repo, done.tree, old, source, message)
        _remember_tip(new, done.tree)
        merged = MergedTree(repo, old, source, new, worktree, done.auto_merged)
        return Step(merged, [], done.messages)
    resolved = _rerere_merge(repo, worktree, old, source, message) if rerere else None
    return Step(resolved, [] if resolved else done.conflicts, done.messages)


def conflicted_paths(repo: Path, ours: str, theirs: str) -> list[str]:
    """The files a merge of ``ours`` and ``theirs`` conflicts on (made in the object
    database; nothing is written but objects)."""
    result = call(
        repo, "merge-tree", "--write-tree", "--name-only", "-z", ours, theirs, strip=False
    )
    if result.status not in (0, 1):
        raise GitError(runner.failure(("merge-tree",), result))
    return _parse_merge_tree(result.out).conflicts


#: Trees of the merge commits this process made: the next merge's tip needs no git call.
_TIP_TREES: dict[str, str] = {}


_TIP_TREES_KEPT = 16


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
    return write_commit(repo, tree, [old, source], message)


def _rerere_merge(
    repo: Path, worktree: Path, old: str, source: str, message: str
) -> MergedTree | None:
    """Merge in the integration worktree with rerere on; None unless it resolved everything."""
    _ensure_detached_worktree(repo, worktree, old)
    reset_worktree(worktree, old)
    rerere = ("-c", "rerere.enabled=true", "-c", "rerere.autoUpdate=true")
    result = call(
        worktree,
        *rerere,
        *runner.NO_HOOKS,
        "merge",
        "--no-ff",
        "--no-commit",
        source,
        env=runner.identity(),
    )
    unresolved = unmerged_paths(worktree)
    if result.status != 0 and (unresolved or conflict_markers(worktree)):
        call(worktree, "merge", "--abort")
        reset_worktree(worktree, old)
        return None
    tree = run(worktree, "write-tree")
    call(worktree, "merge", "--abort")
    new = _commit_tree(repo, tree, old, source, message)
    merged = MergedTree(repo, old, source, new, worktree)
    merged.checkout()
    logger.info("rerere resolved every conflict of merging %s", source)
    return merged


def advance(repo: Path, branch: str, old: str, new: str) -> None:
    """Move ``branch`` from ``old`` to ``new``, refusing if it moved meanwhile. ``update-ref``
    with the old value is git's own compare-and-swap under the ref's lock, so this does not
    wait for :func:`runner.repo_lock`: under load the agents' worktree work held it most of the time
    and every merge queued behind it."""
    refused = move_ref(repo, f"refs/heads/{branch}", new, old, f"cw: merge into {branch}")
    if refused is not None:
        now = branch_sha(repo, branch)
        raise GitError(
            f"{branch} moved from {old} to {now} during the merge, so it was not advanced "
            f"to {new}; merge again (git update-ref failed: {refused})"
        )


def _is_worktree_top(path: Path) -> bool:
    """Whether ``path`` is itself the top of a working tree (not a directory inside one)."""
    if not path.is_dir():
        return False
    result = call(path, "rev-parse", "--show-toplevel")
    return result.status == 0 and Path(result.out).resolve() == path.resolve()


def _ensure_detached_worktree(repo: Path, path: Path, sha: str) -> None:
    """Make ``path`` a usable worktree of ``repo``, adding it detached at ``sha`` if needed."""
    entry = find_worktree(repo, path)
    if entry is not None and entry.main:
        raise GitError(f"{path} is the main worktree of {repo}; cw merges only in its own")
    if entry is not None and _is_worktree_top(path):
        return
    with runner.repo_lock(repo):
        _discard_leftover(path, registered=entry is not None)
        run(repo, "worktree", "prune")
        run(repo, "worktree", "add", "--detach", str(path), sha)
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


def reset_worktree(worktree: Path, sha: str) -> None:
    """Put ``worktree`` at ``sha``, detached and spotless, whatever a crash left behind."""
    lock = Path(run(worktree, "rev-parse", "--path-format=absolute", "--git-path", "index.lock"))
    if lock.exists():  # merges are serialised, so this lock outlived a crashed merge
        logger.warning("removing stale %s", lock)
        lock.unlink()
    run(worktree, "checkout", "--quiet", "--detach", "--force", sha)
    run(worktree, "reset", "--quiet", "--hard", sha)
    run(worktree, "clean", "-ffdxq")


def merge_into_worktree(
    worktree: Path, commit: str, message: str, *, rerere: bool = False
) -> list[str]:
    """Merge ``commit`` into the worktree's branch (a bounced task catching up).

    A clean merge is committed; on conflicts the merge is left in progress, markers in the
    files, for the agent to resolve; the conflicting paths are returned. With ``rerere``, git
    records the conflicts (and replays resolutions it already knows).
    """
    config = ("-c", "rerere.enabled=true") if rerere else ()
    result = call(
        worktree,
        *config,
        *runner.NO_HOOKS,
        "merge",
        "--no-ff",
        "--no-edit",
        "-m",
        message,
        commit,
        env=runner.identity(),
    )
    if result.status == 0:
        return []
    conflicts = unmerged_paths(worktree)
    if not conflicts:
        raise GitError(runner.failure(("merge",), result))
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
    call(worktree, "-c", "rerere.enabled=true", "rerere")


def unmerged_paths(worktree: Path) -> list[str]:
    """The paths a merge in progress left unmerged in the index (none were staged since)."""
    return nul_split(run(worktree, "diff", "--name-only", "-z", "--diff-filter=U"))


def undecided_deletions(worktree: Path) -> list[str]:
    """The paths a merge in progress left deleted on one side and changed on the other, still
    unmerged and still there: no marker shows them, and ``git add -A`` would keep the change
    (undoing the deletion) without anyone deciding it. One the agent removed is decided."""
    stages: dict[str, set[str]] = {}
    for entry in nul_split(run(worktree, "ls-files", "--unmerged", "-z")):
        meta, _, path = entry.partition("\t")
        stages.setdefault(path, set()).add(meta.rsplit(" ", 1)[-1])
    one_sided = (path for path, found in stages.items() if not {"2", "3"} <= found)
    return sorted(path for path in one_sided if (worktree / path).exists())  # removed: decided


def open_conflicts(worktree: Path) -> list[str]:
    """The conflicts of a merge still in progress: unmerged paths and files with markers."""
    return sorted({*unmerged_paths(worktree), *conflict_markers(worktree)})


#: A conflict marker line as git writes it (``<<<<<<< HEAD``, ``>>>>>>> branch``): seven
#: signs, or more where ``.gitattributes`` sets ``conflict-marker-size``.
CONFLICT_MARKER = r"^(<{7,}|>{7,})( |$)"
_ADDED_MARKER = re.compile(r"^\+(<{7,}|>{7,})( |$)")
#: A plain diff of the worktree against its HEAD: no external diff driver, no textconv.
_DIFF_HEAD = ("diff", "HEAD", "--no-ext-diff", "--no-textconv", "--no-color")


def conflict_markers(worktree: Path, conflicted: Iterable[str] = ()) -> list[str]:
    """Files with conflict markers a merge left unresolved: marker lines the worktree's changes
    since HEAD add, and any in the ``conflicted`` files (a commit of work in progress may hold
    a catch-up's markers). Marker-like lines other files held before are their content (a
    document about git, a merge tool's tests), and a big repository's unchanged files are not
    read."""
    pickaxe = run(worktree, *_DIFF_HEAD, "--name-only", "-z", "-G", CONFLICT_MARKER)
    added = {path for path in nul_split(pickaxe) if _adds_marker(worktree, path)}
    return sorted(added | set(_marked(worktree, conflicted)))


def _marked(worktree: Path, paths: Iterable[str]) -> list[str]:
    """Those of ``paths`` whose files hold a marker line."""
    literal = [f":(literal){path}" for path in paths]
    if not literal:
        return []
    grep = call(worktree, "grep", "-l", "-z", "-E", CONFLICT_MARKER, "--", *literal)
    return nul_split(grep.out) if grep.status == 0 else []


def _adds_marker(worktree: Path, path: str) -> bool:
    """Whether the change to ``path`` adds a marker line (``-G`` also finds removed ones)."""
    patch = run(worktree, *_DIFF_HEAD, "-U0", "--", f":(literal){path}")
    return any(_ADDED_MARKER.match(line) for line in patch.splitlines())


UNION_BEGIN = "# cw: union merge (merge_union setting) begin"


UNION_END = "# cw: union merge end"


def set_union_merge(repo: Path, globs: list[str]) -> None:
    """Merge files matching ``globs`` with git's ``union`` driver (both sides' lines kept).

    Written to ``info/attributes`` in the git common dir, between cw's own markers, so the
    user's attributes and checkout are untouched and every worktree sees it.
    """
    path = runner.git_common_dir(repo) / "info" / "attributes"
    block = "".join(f"{glob} merge=union\n" for glob in globs)
    if not block and UNION_BEGIN not in _read_text(path):
        return  # nothing configured, nothing to undo: the common case costs no write
    with runner.repo_lock(repo):
        text = _read_text(path)
        kept = text
        if UNION_BEGIN in kept:
            head, _, rest = kept.partition(UNION_BEGIN)
            kept = head + rest.partition(UNION_END)[2].lstrip("\n")
        if block:
            kept = kept.rstrip("\n") + ("\n" if kept.strip() else "")
            kept += f"{UNION_BEGIN}\n{block}{UNION_END}\n"
        if kept != text:  # written whole or not at all: the person's own attributes live there
            path.parent.mkdir(parents=True, exist_ok=True)
            part = path.with_name(f"{path.name}.cw-{os.getpid()}")
            part.write_text(kept, encoding="utf-8")
            os.replace(part, path)


def _read_text(path: Path) -> str:
    return path.read_text(encoding="utf-8") if path.exists() else ""
