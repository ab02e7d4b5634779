"""Git repositories an agent made inside its worktree (``git init`` or a clone there).

Staged by ``git add -A``, such a repository is a bare link to a commit only it holds: merged,
its files would be lost with the worktree, and the integration branch would name a commit it
does not have. A submodule registered in ``.gitmodules`` is left alone.
"""

from __future__ import annotations

import re
from pathlib import Path

from cw.errors import GitError
from cw.git.runner import call, failure, nul_split, run

#: What ``git add`` says of a repository inside the worktree that has no commit yet.
_EMPTY_REPOSITORY = re.compile(r"'(.+?)/?' does not have a commit checked out")
#: The mode git gives a link to another repository's commit.
_LINK = "160000"


def add_all(worktree: Path) -> list[str]:
    """``git add -A``, leaving out the repositories of their own inside the worktree, which
    are returned."""
    added = call(worktree, "add", "-A")
    if added.status != 0:
        empty = _EMPTY_REPOSITORY.findall(added.err)  # one without a commit: add fails
        if not empty:
            raise GitError(failure(("add",), added))
        run(worktree, "add", "-A", "--", ".", *(f":(exclude){path}" for path in empty))
        return list(empty)
    if not added.err:  # git warns of an embedded repository, among other things
        return []
    embedded = _unregistered(worktree, run(worktree, "diff", "--cached", "--raw", "-z"))
    if embedded:
        run(worktree, "reset", "-q", "--", *embedded)
    return embedded


def committed(worktree: Path, since: str) -> list[str]:
    """The links to repositories of their own that commits made after ``since`` added (the
    agent's own ``git add -A`` and commit: git warns only that once)."""
    return _unregistered(worktree, run(worktree, "diff", "--raw", "-z", since, "HEAD"))


def _unregistered(worktree: Path, raw: str) -> list[str]:
    """The paths ``git diff --raw -z`` output adds or turns into links, less the submodules
    ``.gitmodules`` lists."""
    fields = nul_split(raw)
    modes = [meta.split()[:2] for meta in fields[::2]]  # ":old new", the old with its colon
    links = [
        path
        for (old, new), path in zip(modes, fields[1::2], strict=False)
        if new == _LINK and old != f":{_LINK}"
    ]
    modules = worktree / ".gitmodules"
    listed = modules.read_text(errors="replace") if modules.is_file() else ""
    return [path for path in links if f"path = {path}\n" not in listed + "\n"]


def why(paths: list[str], *, committed: bool = False) -> str:
    """What is wrong with the repositories at ``paths``, and what to do."""
    fix = f"`git rm --cached {paths[0]}`, " if committed else ""
    return (
        f"{', '.join(paths)}: a git repository of its own inside the worktree (git init or "
        f"clone there), whose files cannot be committed: {fix}remove its .git (or register it "
        "as a submodule), then `cw task retry`"
    )
