"""Running git: the one place cw starts a git process (:mod:`cw.git.kept` keeps a few open).

Git runs through GitPython's ``git.Git`` (one short-lived object per call, so no ``Repo`` is
held open and no file handles leak), with the same safe configuration every time. Worktree and
branch changes hold :func:`repo_lock`, a ``flock`` in the git common directory: concurrent
``git worktree add`` fails without one. The integration branch moves by ``update-ref`` with its
old value (git's own compare-and-swap), outside that lock.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import git

from cw.defaults import (
    CW_GIT_EMAIL,
    CW_GIT_NAME,
    GIT_LOCK_FILE,
)
from cw.errors import GitError, NotAGitRepository
from cw.host.locks import file_lock

logger = logging.getLogger(__name__)


# Passed to every git command: no signing prompts, no rerere "resolutions" that
# hide a conflict, no colour codes in parsed output, no background gc or maintenance.
SAFE_CONFIG = (
    "-c",
    "commit.gpgSign=false",
    "-c",
    "rerere.enabled=false",
    "-c",
    "color.ui=false",
    "-c",
    "gc.auto=0",
    "-c",
    "maintenance.auto=false",  # a commit would start `git maintenance run --auto` for nothing
)
# For cw's own commits and merges: --no-verify skips pre-commit and commit-msg,
# but prepare-commit-msg and pre-merge-commit hooks can still fail a commit.
NO_HOOKS = ("-c", "core.hooksPath=/dev/null")
DIFF_FLAGS = ("--no-ext-diff", "--no-color")


@dataclass(frozen=True)
class Result:
    """A finished git command: its exit status, stdout and stderr."""

    status: int
    out: str
    err: str


def call(
    cwd: Path,
    *args: str,
    env: Mapping[str, str] | None = None,
    strip: bool = True,
    timeout: float | None = None,
) -> Result:
    """Run git in ``cwd`` and return its status and output; never raises on failure. After
    ``timeout`` seconds git and what it started (ssh, a credential helper) are killed."""
    status, out, err = _execute(cwd, args, env=env, strip=strip, text=True, timeout=timeout)
    return Result(status, out, err)


def run_bytes(cwd: Path, *args: str) -> bytes:
    """Run git in ``cwd`` and return its raw stdout; raise :class:`GitError` on failure."""
    status, out, err = _execute(cwd, args, env=None, strip=False, text=False, timeout=None)
    if status != 0:
        raise GitError(failure(args, Result(status, "", err)))
    return bytes(out)


def _execute(
    cwd: Path,
    args: tuple[str, ...],
    *,
    env: Mapping[str, str] | None,
    strip: bool,
    text: bool,
    timeout: float | None,
) -> tuple[int, Any, str]:
    if not cwd.is_dir():
        raise GitError(f"cannot run git {args[0]}: {cwd} is not a directory")
    status, out, err = git.Git(str(cwd)).execute(
        ["git", *SAFE_CONFIG, *args],
        with_extended_output=True,
        with_exceptions=False,
        env=env,
        stdout_as_string=text,
        strip_newline_in_stdout=strip,
        kill_after_timeout=timeout,
    )
    return status, out, err


def run(cwd: Path, *args: str, env: Mapping[str, str] | None = None, strip: bool = True) -> str:
    """Run git in ``cwd`` and return its stdout; raise :class:`GitError` on failure."""
    result = call(cwd, *args, env=env, strip=strip)
    if result.status != 0:
        raise GitError(failure(args, result))
    return result.out


def failure(args: tuple[str, ...], result: Result) -> str:
    """One line saying which git command failed, in git's own words."""
    command = next(arg for arg in args if not arg.startswith("-") and "=" not in arg)
    lines = [line.strip() for line in result.err.splitlines() if line.strip()]
    remote = [line.removeprefix("remote: ") for line in lines if line.startswith("remote: ")]
    fatal = [line for line in [*remote, *lines] if line.startswith(("fatal:", "error:"))]
    reason = (fatal or lines or [f"exit status {result.status}"])[0]
    return f"git {command} failed: {reason}"


def identity(author: str | None = None) -> dict[str, str]:
    """cw's identity as environment variables: works with no git identity configured."""
    return {
        "GIT_AUTHOR_NAME": author or CW_GIT_NAME,
        "GIT_AUTHOR_EMAIL": CW_GIT_EMAIL,
        "GIT_COMMITTER_NAME": CW_GIT_NAME,
        "GIT_COMMITTER_EMAIL": CW_GIT_EMAIL,
    }


def nul_split(output: str) -> list[str]:
    """Split ``-z`` output into names."""
    return [name for name in output.split("\0") if name]


def repo_root(path: Path) -> Path:
    """The top of the working tree containing ``path``."""
    start = path
    while not start.is_dir() and start != start.parent:
        start = start.parent
    result = call(start, "rev-parse", "--show-toplevel")
    if result.status != 0 or not result.out:
        raise NotAGitRepository(f"{path} is not inside a git repository; run cw init in one")
    return Path(result.out)


def loose_ref(repo: Path, ref: str) -> str | None:
    """The sha in ``ref``'s loose ref file, read without starting git; None when the ref is
    packed, symbolic or absent (ask git then). A loose ref is the ref: git reads it before the
    packed ones. Git replaces ref files by rename under a lock, so a read never sees half a
    sha."""
    try:
        text = (git_common_dir(repo) / ref).read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return text if OBJECT_ID.fullmatch(text) else None


#: A full object id: SHA-1 or SHA-256.
OBJECT_ID = re.compile(r"[0-9a-f]{40}([0-9a-f]{24})?")


def git_common_dir(repo: Path) -> Path:
    """The repository's shared git directory (cached: it never moves while cw runs)."""
    return _common_dir(str(repo))


@functools.lru_cache(maxsize=64)
def _common_dir(repo: str) -> Path:
    return Path(run(Path(repo), "rev-parse", "--path-format=absolute", "--git-common-dir"))


@contextmanager
def repo_lock(repo: Path) -> Iterator[None]:
    """Hold cw's exclusive lock on ``repo`` (a ``flock``, so it spans processes)."""
    with file_lock(git_common_dir(repo) / GIT_LOCK_FILE):
        yield


def prepare_repository(repo: Path) -> None:
    """Turn off background gc, which prunes worktrees and packs refs under cw's feet."""
    run(repo, "config", "--local", "gc.auto", "0")


def rev(repo: Path, ref: str) -> str | None:
    """The commit sha ``ref`` names, or None if it names nothing."""
    result = call(repo, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")
    if result.status == 0:
        return result.out
    if result.status == 1:
        return None
    raise GitError(failure(("rev-parse",), result))


def tracked_files(repo: Path, path: str) -> list[str]:
    """The files git tracks under ``path`` (relative to ``repo``)."""
    return nul_split(run(repo, "ls-files", "-z", "--", f":(literal){path}"))


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
