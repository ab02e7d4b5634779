"""Running git: the one place cw starts a git process (:mod:`cw.git.kept` keeps a few open).

Each git command is a short-lived child process (no ``Repo`` is held open, so no file handles
leak), with the same safe configuration every time. One with a time limit (its own, or that of
:func:`bounded` around an attempt's git steps) runs in a process group of its own, killed whole
when the time is up, a stop or a shutdown comes: a smudge filter or a hook that hangs is git's
child. Worktree and branch changes hold :func:`repo_lock`, a ``flock`` in the git common
directory: concurrent ``git worktree add`` fails without one; within :func:`bounded`, the wait
for it ends as a git command would. The integration branch moves by
``update-ref`` with its old value (git's own compare-and-swap), outside that lock.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cw.defaults import (
    CW_GIT_EMAIL,
    CW_GIT_NAME,
    GIT_LOCK_FILE,
)
from cw.errors import CwError, GitError, NotAGitRepository
from cw.host import locks, processes

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


#: How long a git command a stop may end waits between looks at the stop (the heartbeat
#: notices a stop request; this adds at most so much to it).
STOP_POLL_SECONDS = 0.2
#: Between SIGTERM to a git command's process group (git removes its lock files) and SIGKILL.
KILL_GRACE_SECONDS = 2.0


class GitTimedOut(CwError):
    """A git step of an attempt ran longer than ``git_timeout`` (a smudge filter waiting on the
    network, a hook that hangs, a stuck file system): git was killed with what it started, and
    the attempt is tried again, as when other parts of cw's machinery fail. Not a
    :class:`GitError`: nothing retries the step at once (it would hang as long again)."""


class GitStopped(CwError):
    """A person's stop ended the git step an attempt was waiting for: git was killed with what
    it started, and the attempt ends as stopped."""

    why = "a stop request"


class GitInterrupted(CwError):
    """The shutdown of the worker running an attempt ended the git step it was waiting for: git
    was killed with what it started, and the attempt ends as interrupted (its task ready, its
    worktree kept: the restarted worker goes on with it)."""

    why = "the worker's shutdown"


#: What ends the git commands of a :func:`bounded` block once its event is set.
_ENDS: dict[str, type[GitStopped | GitInterrupted]] = {
    "stop": GitStopped,
    "interrupt": GitInterrupted,
}


@dataclass(frozen=True)
class _Bound:
    """What ends the git commands run within :func:`bounded`."""

    seconds: float
    stop: threading.Event | None
    interrupt: threading.Event | None

    @property
    def endable(self) -> bool:
        """Whether anything but the time limit may end the block's commands."""
        return self.stop is not None or self.interrupt is not None

    def ended(self) -> str:
        """What has ended the block ('' while nothing has): a person's stop wins over a
        shutdown."""
        if self.stop is not None and self.stop.is_set():
            return "stop"
        if self.interrupt is not None and self.interrupt.is_set():
            return "interrupt"
        return ""


_BOUND: ContextVar[_Bound | None] = ContextVar("cw_git_bound", default=None)


@contextmanager
def bounded(
    seconds: float,
    stop: threading.Event | None = None,
    interrupt: threading.Event | None = None,
) -> Iterator[None]:
    """Within it, each git command this thread runs is killed with its process group (filters,
    hooks, ssh) after ``seconds`` (:class:`GitTimedOut`; a command given a time limit of its
    own, a talk with the hub, keeps it), once ``stop`` is set (:class:`GitStopped`) or once
    ``interrupt`` is (:class:`GitInterrupted`); after either, every later command raises the
    same at once. A wait for :func:`repo_lock` ends the same ways."""
    token = _BOUND.set(_Bound(seconds, stop, interrupt))
    try:
        yield
    finally:
        _BOUND.reset(token)


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
    ``timeout`` seconds git and what it started (ssh, a credential helper) are killed, and
    stderr says ``Timeout: ...``. Within :func:`bounded`, its limits end the command."""
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
    bound = _BOUND.get()
    if bound is not None and (end := _ENDS.get(bound.ended())):
        raise end(f"{end.why} came before git {command_name(args)}")
    seconds = timeout if timeout is not None or bound is None else bound.seconds
    status, out, err, ended = _spawn(cwd, args, _environment(env), seconds, bound)
    if end := _ENDS.get(ended):
        raise end(f"{end.why} ended git {command_name(args)} (killed, with its group)")
    if ended and timeout is None:
        raise GitTimedOut(
            f"git {command_name(args)} ran longer than {seconds:g} s (git_timeout) and was "
            "killed with what it started: a filter or hook waiting on something (git lfs, the "
            "network) or a stuck file system? A slower repository needs a larger CW_GIT_TIMEOUT"
        )
    if ended:  # the caller words it (the hub's talks)
        err = f"Timeout: git {command_name(args)} did not complete in {seconds:g} s".encode()
    out = out.removesuffix(b"\n") if strip else out
    stdout = out.decode(errors="surrogateescape") if text else out
    return status, stdout, err.decode(errors="surrogateescape").removesuffix("\n")


def _environment(env: Mapping[str, str] | None) -> dict[str, str]:
    """This process's environment, git's messages in English (cw reads some), and ``env``."""
    return {**os.environ, "LANGUAGE": "C", "LC_ALL": "C", **(env or {})}


def _orphan_guard(argv: list[str]) -> tuple[list[str], Callable[[], None] | None]:
    """git in a session of its own is out of its worker's process group: killing that group
    (``cw server``'s stop) would leave it running, holding its lock files. It gets SIGTERM
    when the thread that started it ends instead (git then removes its locks): through
    ``setpriv --pdeathsig`` where util-linux has it (a spawn as fast as a plain one), else a
    ``preexec_fn`` (which costs a full fork of this process)."""
    setpriv = _setpriv()
    if setpriv is not None:
        return [setpriv, "--pdeathsig", "TERM", *argv], None
    return argv, processes.term_with_parent()


@functools.cache
def _setpriv() -> str | None:
    """``setpriv`` if it is here and knows ``--pdeathsig`` (util-linux 2.33 and later)."""
    found = shutil.which("setpriv")
    if found is None:
        return None
    try:
        ok = subprocess.run([found, "--pdeathsig", "TERM", "true"], capture_output=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return found if ok.returncode == 0 else None


def _spawn(
    cwd: Path,
    args: tuple[str, ...],
    env: dict[str, str],
    seconds: float | None,
    bound: _Bound | None,
) -> tuple[int, bytes, bytes, str]:
    """Run git to its end: exit status, stdout, stderr, and what ended it ('' when it ended by
    itself). Under a time limit or within :func:`bounded`, in a process group of its own,
    killed whole."""
    limited = seconds is not None or bound is not None
    argv, guard = ["git", *SAFE_CONFIG, *args], None
    if limited:
        argv, guard = _orphan_guard(argv)
    proc = subprocess.Popen(
        argv,
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=limited,
        preexec_fn=guard,
    )
    try:
        out, err, ended = _watched(proc, seconds, bound) if limited else (*proc.communicate(), "")
    finally:
        if proc.poll() is None:  # interrupted (KeyboardInterrupt): git never outlives the call
            if limited:
                processes.kill_group(proc.pid)
            else:
                proc.kill()
            proc.wait()
    return proc.returncode, out, err, ended


def _watched(
    proc: subprocess.Popen[bytes], seconds: float | None, bound: _Bound | None
) -> tuple[bytes, bytes, str]:
    """The output of git in a group of its own, and what ended it: '' (itself), "timeout"
    (``seconds`` passed), or "stop" or "interrupt" (the ``bound``'s event was set); all but
    the first kill its group."""
    deadline = None if seconds is None else time.monotonic() + seconds
    look = STOP_POLL_SECONDS if bound is not None and bound.endable else None
    while True:
        left = None if deadline is None else max(deadline - time.monotonic(), 0.0)
        try:
            out, err = proc.communicate(timeout=min(t for t in (left, look) if t is not None))
            return out, err, ""
        except subprocess.TimeoutExpired:
            pass
        ended = bound.ended() if bound is not None else ""
        if not ended and deadline is not None and time.monotonic() >= deadline:
            ended = "timeout"
        if not ended:
            continue
        processes.terminate_group(proc.pid, KILL_GRACE_SECONDS, proc)
        return (*_drained(proc), ended)


def _drained(proc: subprocess.Popen[bytes]) -> tuple[bytes, bytes]:
    """What a killed git wrote; given up on when a process that left its group (a daemon)
    holds its pipes open."""
    try:
        return proc.communicate(timeout=KILL_GRACE_SECONDS)
    except subprocess.TimeoutExpired as exc:
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()
        proc.wait()
        return exc.output or b"", exc.stderr or b""


def command_name(args: tuple[str, ...]) -> str:
    """The git command ``args`` run, with its subcommand if it has them: ``worktree add``."""
    words = [arg for arg in args if not arg.startswith("-") and "=" not in arg]
    if len(words) > 1 and words[0] in _WITH_SUBCOMMANDS:
        return f"{words[0]} {words[1]}"
    return words[0] if words else "?"


#: Git commands whose next word is a subcommand.
_WITH_SUBCOMMANDS = frozenset(
    {"worktree", "stash", "remote", "submodule", "notes", "sparse-checkout", "lfs", "reflog"}
)


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
    """Hold cw's exclusive lock on ``repo`` (a ``flock``, so it spans processes). Waited for
    as long as it takes, except within :func:`bounded`: there a stop or a shutdown ends the
    wait, and so does the bound's time limit (:class:`GitTimedOut`, naming who holds it)."""
    path = git_common_dir(repo) / GIT_LOCK_FILE
    bound = _BOUND.get()
    with locks.file_lock(path, None if bound is None else _lock_wait(bound, path)):
        yield


def _lock_wait(bound: _Bound, path: Path) -> Callable[[], None]:
    """What a wait for the lock ``path`` within ``bound`` calls between its tries: it raises
    once the wait is to end (another attempt's git step that hangs holds it, say)."""
    deadline = time.monotonic() + bound.seconds
    held_by: str | None = None

    def waiting() -> None:
        nonlocal deadline, held_by
        if end := _ENDS.get(bound.ended()):
            raise end(f"{end.why} ended the wait for cw's lock on the repository ({path})")
        holder = locks.holder(path)
        if holder is not None and holder != held_by:
            # Another holder: the lock moves on (a queue of checkouts, clean-ups), so only one
            # holder keeping it for the whole limit (a git step that hangs) ends the wait.
            held_by, deadline = holder, time.monotonic() + bound.seconds
        if time.monotonic() >= deadline:
            raise GitTimedOut(
                f"waited longer than {bound.seconds:g} s (git_timeout) for cw's lock on the "
                f"repository ({path}), held by {holder or 'another process'}: a git step of "
                "another attempt that hangs (it ends at its own limit)?"
            )

    return waiting


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
