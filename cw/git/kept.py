"""Git processes kept open from one merge to the next.

A merge worker merges one branch after another in one repository; a git process started for
each small step (reading an object, writing the merge commit, moving the branch) cost more
than the step. These serve every step through one process each, kept for the last repository
asked for: ``cat-file --batch`` (through GitPython), ``hash-object -w --stdin-paths`` and
``update-ref --stdin``. A kept process that has ended is started again at the next step; one
inherited from a parent process is never used.
"""

from __future__ import annotations

import atexit
import functools
import os
import subprocess
import threading
import time
from pathlib import Path

import git

from cw.defaults import CW_GIT_EMAIL, CW_GIT_NAME
from cw.errors import GitError
from cw.git.runner import OBJECT_ID, SAFE_CONFIG, git_common_dir

_lock = threading.Lock()


def object_reader(repo: Path) -> git.Git:
    """A ``git.Git`` whose ``cat-file --batch`` processes serve every object read of ``repo``
    (``get_object_header`` / ``get_object_data``). They read objects written after they
    started, so a reader never goes stale; one whose process has ended is replaced."""
    key = (os.getpid(), str(repo))
    with _lock:
        if key not in _readers or not _alive(_readers[key]):
            _readers.clear()  # another repository's, the parent process's, or a dead one
            _readers[key] = git.Git(str(repo))
        return _readers[key]


def _alive(reader: git.Git) -> bool:
    """Whether every ``cat-file`` process the reader started still runs."""
    started = [cmd for cmd in (reader.cat_file_all, reader.cat_file_header) if cmd is not None]
    return all(cmd.proc is not None and cmd.proc.poll() is None for cmd in started)


_readers: dict[tuple[int, str], git.Git] = {}


def move_ref(repo: Path, ref: str, new: str, old: str, message: str) -> str | None:
    """Move ``ref`` from ``old`` to ``new`` by compare-and-set, with ``message`` in its reflog;
    None when it moved, else git's reason (the ref held another value, say).

    Each move is one transaction of ``git update-ref --stdin``: git checks the old value under
    the ref's lock at ``prepare`` and, refusing, exits."""
    argv = ("update-ref", "--stdin", "-m", message)
    commands = f"start\nupdate {ref} {new} {old}\nprepare\ncommit\n"
    with _lock:
        kept = _keep(repo, argv)
        replies = kept.ask(commands, len(_MOVED))
        return None if replies == _MOVED else kept.close()


_MOVED = ["start: ok\n", "prepare: ok\n", "commit: ok\n"]


def write_commit(repo: Path, tree: str, parents: list[str], message: str) -> str:
    """Write a commit of ``tree`` by cw (as ``git commit-tree`` with cw's identity would);
    its id. Through ``git hash-object -w --stdin-paths``, which checks the commit is well
    formed and writes it as git writes any object."""
    stamp = _now()
    text = "".join(
        [
            f"tree {tree}\n",
            *(f"parent {parent}\n" for parent in parents),
            f"author {CW_GIT_NAME} <{CW_GIT_EMAIL}> {stamp}\n",
            f"committer {CW_GIT_NAME} <{CW_GIT_EMAIL}> {stamp}\n",
            "\n",
            message.replace("\0", " ").removesuffix("\n") + "\n",
        ]
    )
    path = git_common_dir(repo) / f"cw-commit-{os.getpid()}"
    with _lock:  # one file per process: the next commit is written once this one is read
        path.write_text(text, encoding="utf-8")
        _written.add(path)
        kept = _keep(repo, ("hash-object", "-w", "-t", "commit", "--stdin-paths"))
        sha = "".join(kept.ask(f"{path}\n", 1)).strip()
        if not OBJECT_ID.fullmatch(sha):
            raise GitError(f"git hash-object failed: {kept.close()}")
    return sha


def _now() -> str:
    """Now as git writes it in a commit: seconds since the epoch and the local UTC offset."""
    seconds = int(time.time())
    offset = time.localtime(seconds).tm_gmtoff // 60
    sign = "-" if offset < 0 else "+"
    return f"{seconds} {sign}{abs(offset) // 60:02d}{abs(offset) % 60:02d}"


class _Kept:
    """One git process of one repository, answering commands line by line."""

    def __init__(self, repo: Path, argv: tuple[str, ...]) -> None:
        self.repo, self.argv = repo, argv
        self.proc: subprocess.Popen[str] | None = None

    def ask(self, commands: str, lines: int) -> list[str]:
        """Its reply lines to ``commands`` (short when it ended); a process that had ended
        while idle is started again once."""
        fresh = self.proc is None
        replies = self._send(commands, lines)
        if not fresh and not (replies and replies[0]):
            self.close()
            replies = self._send(commands, lines)
        return replies

    def _send(self, commands: str, lines: int) -> list[str]:
        if self.proc is None:
            self.proc = subprocess.Popen(
                ["git", *SAFE_CONFIG, *self.argv],
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
        return [self.proc.stdout.readline() for _ in range(lines)]

    def close(self, own: bool = True) -> str:
        """End the process (``own``: this process started it); the first line it said on
        stderr, an error first."""
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


def _keep(repo: Path, argv: tuple[str, ...]) -> _Kept:
    """The kept process running ``argv`` in ``repo``; another of the same command ends."""
    key = (os.getpid(), str(repo), argv)
    if key not in _processes:
        for stale in [k for k in _processes if k[2][0] == argv[0]]:
            _processes.pop(stale).close(own=stale[0] == os.getpid())
        _processes[key] = _Kept(repo, argv)
        _close_at_exit()
    return _processes[key]


_processes: dict[tuple[int, str, tuple[str, ...]], _Kept] = {}
_written: set[Path] = set()  # the commit files write_commit left


@functools.cache
def _close_at_exit() -> None:
    """Once per process: the kept processes end with it, not after it."""
    atexit.register(_end)


def _end() -> None:
    me = os.getpid()
    for key, kept in _processes.items():
        kept.close(own=key[0] == me)
    for path in _written:
        if path.name == f"cw-commit-{me}":  # a forked child leaves its parent's alone
            path.unlink(missing_ok=True)
