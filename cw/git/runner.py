"""Running git: the one place cw starts a git process.

Git runs through GitPython's ``git.Git`` (one short-lived object per call, so no ``Repo`` is
held open and no file handles leak), with the same safe configuration every time. Worktree and
branch changes hold :func:`repo_lock`, a ``flock`` in the git common directory: concurrent
``git worktree add`` fails without one. The integration branch moves by ``update-ref`` with its
old value (git's own compare-and-swap), outside that lock.
"""

from __future__ import annotations

import atexit
import functools
import logging
import os
import subprocess
import threading
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
NO_HOOKS = ("-c", "core.hooksPath=/dev/null")
DIFF_FLAGS = ("--no-ext-diff", "--no-color")


@dataclass(frozen=True)
class Result:
    """A finished git command: its exit status, stdout and stderr."""

    status: int
    out: str
    err: str


def call(cwd: Path, *args: str, env: Mapping[str, str] | None = None, strip: bool = True) -> Result:
    """Run git in ``cwd`` and return its status and output; never raises on failure."""
    status, out, err = _execute(cwd, args, env=env, strip=strip, text=True)
    return Result(status, out, err)


def run_bytes(cwd: Path, *args: str) -> bytes:
    """Run git in ``cwd`` and return its raw stdout; raise :class:`GitError` on failure."""
    status, out, err = _execute(cwd, args, env=None, strip=False, text=False)
    if status != 0:
        raise GitError(failure(args, Result(status, "", err)))
    return bytes(out)


def object_reader(repo: Path) -> git.Git:
    """A ``git.Git`` whose ``cat-file --batch`` processes serve every object read of ``repo``
    (``get_object_header`` / ``get_object_data``) in this process: kept from one call to the
    next, for the last repository asked for (a merge worker has one). They read objects
    written after they started, so a reader never goes stale."""
    key = (os.getpid(), str(repo))
    with _kept_lock:
        if key not in _kept_readers:
            _kept_readers.clear()  # another repository's, or the parent process's
            _kept_readers[key] = git.Git(str(repo))
        return _kept_readers[key]


_kept_lock = threading.Lock()
_kept_readers: dict[tuple[int, str], git.Git] = {}


def _execute(
    cwd: Path, args: tuple[str, ...], *, env: Mapping[str, str] | None, strip: bool, text: bool
) -> tuple[int, Any, str]:
    if not cwd.is_dir():
        raise GitError(f"cannot run git {args[0]}: {cwd} is not a directory")
    status, out, err = git.Git(str(cwd)).execute(
        ["git", *_SAFE_CONFIG, *args],
        with_extended_output=True,
        with_exceptions=False,
        env=env,
        stdout_as_string=text,
        strip_newline_in_stdout=strip,
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


def move_ref(repo: Path, ref: str, new: str, old: str, message: str) -> str | None:
    """Move ``ref`` from ``old`` to ``new`` by compare-and-set, with ``message`` in its reflog;
    None when it moved, else git's reason (the ref held another value, say).

    Through one ``git update-ref --stdin`` kept for the last repository and message asked for:
    a merge worker moves its integration branch once per merge, and starting a git process
    for each move was a tenth of the merge. Each move is one transaction; git checks the old
    value under the ref's lock at ``prepare`` and, refusing, exits: the next move starts
    another process."""
    key = (os.getpid(), str(repo), message)
    with _kept_lock:
        if key not in _kept_updaters:
            for stale in list(_kept_updaters):  # one kept at a time
                _kept_updaters.pop(stale).close(own=stale[0] == os.getpid())
            _kept_updaters[key] = _RefUpdater(repo, message)
            _close_at_exit()
        return _kept_updaters[key].move(ref, new, old)


@functools.cache
def _close_at_exit() -> None:
    """Once per process: the kept ``update-ref`` ends with it, not after it."""
    atexit.register(lambda: [u.close(own=k[0] == os.getpid()) for k, u in _kept_updaters.items()])


_MOVED = ["start: ok\n", "prepare: ok\n", "commit: ok\n"]


class _RefUpdater:
    """One ``git update-ref --stdin -m MESSAGE`` process of one repository."""

    def __init__(self, repo: Path, message: str) -> None:
        self.repo, self.message = repo, message
        self.proc: subprocess.Popen[str] | None = None

    def move(self, ref: str, new: str, old: str) -> str | None:
        fresh = self.proc is None
        replies = self._send(f"start\nupdate {ref} {new} {old}\nprepare\ncommit\n")
        if replies == _MOVED:
            return None
        reason = self.close()
        if not fresh and replies[:1] != _MOVED[:1]:  # it had ended while idle: start another
            return self.move(ref, new, old)
        return reason

    def _send(self, commands: str) -> list[str]:
        if self.proc is None:
            self.proc = subprocess.Popen(
                ["git", *_SAFE_CONFIG, "update-ref", "--stdin", "-m", self.message],
                cwd=self.repo,
                text=True,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
        assert self.proc.stdin is not None and self.proc.stdout is not None
        try:
            self.proc.stdin.write(commands)
            self.proc.stdin.flush()
        except OSError:  # it has ended: its reason is on stderr
            return []
        return [self.proc.stdout.readline() for _ in _MOVED]

    def close(self, own: bool = True) -> str:
        """End the process (``own``: this process started it); what it said on stderr."""
        proc, self.proc = self.proc, None
        if proc is None or not own:
            return ""
        try:
            _out, err = proc.communicate(timeout=10)
        except (OSError, ValueError, subprocess.TimeoutExpired):
            proc.kill()
            _out, err = proc.communicate()
        lines = [line.strip() for line in (err or "").splitlines() if line.strip()]
        fatal = [line for line in lines if line.startswith(("fatal:", "error:"))]
        return (fatal or lines or [f"exit status {proc.returncode}"])[0]


_kept_updaters: dict[tuple[int, str, str], _RefUpdater] = {}
