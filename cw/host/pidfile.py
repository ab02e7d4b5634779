"""A PID file under an ``flock``: held for the owner's life, so it cannot go stale.

A process that dies (even by SIGKILL) releases the lock with its last file descriptor, so
"is it running?" is "is the lock held?", never "does the file exist?".
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from cw.errors import UsageError

LOCK_TRIES = 5
TRY_SECONDS = 0.05


class AlreadyRunning(UsageError):
    """Another process holds the PID file: the program it is for runs already."""

    def __init__(self, pid: int, message: str) -> None:
        self.pid = pid
        super().__init__(message)


@contextmanager
def hold(path: Path, taken: str) -> Iterator[None]:
    """Hold ``path`` locked with this process's pid in it, then remove it.

    Raises :class:`AlreadyRunning` with ``taken`` (``{pid}`` filled in) when another process
    holds it.
    """
    handle = _lock(path, taken)
    try:
        handle.truncate(0)
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        yield
    finally:
        path.unlink(missing_ok=True)
        handle.close()


def _lock(path: Path, taken: str) -> IO[str]:
    path.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(LOCK_TRIES):
        handle = path.open("a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            time.sleep(TRY_SECONDS)  # maybe only a reader of holder() looking
            continue
        if _same_file(handle, path):
            return handle
        handle.close()  # its last owner removed it while we waited: lock the new one
    pid = holder(path) or 0
    raise AlreadyRunning(pid, taken.format(pid=pid))


def _same_file(handle: IO[str], path: Path) -> bool:
    try:
        return os.fstat(handle.fileno()).st_ino == path.stat().st_ino
    except FileNotFoundError:
        return False


def holder(path: Path) -> int | None:
    """The pid of the process holding ``path``; None when nobody holds it (0: unreadable)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return _read_pid(path)
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _read_pid(path: Path) -> int:
    for _ in range(20):  # the holder writes its pid just after taking the lock
        try:
            return int(path.read_text().strip())
        except (OSError, ValueError):
            time.sleep(TRY_SECONDS)
    return 0
