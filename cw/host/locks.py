"""Exclusive file locks (``flock``): they span processes and vanish with a dead holder."""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import psutil

#: Between tries at a lock another process holds, when the wait may end (:func:`file_lock`).
RETRY_SECONDS = 0.05


@contextmanager
def file_lock(path: Path, waiting: Callable[[], None] | None = None) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created if missing) for the ``with`` block. While
    another holds it, the wait lasts until it lets go; with ``waiting``, that is called between
    tries, and ends the wait by raising."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        _acquire(handle, waiting)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _acquire(handle: IO[str], waiting: Callable[[], None] | None) -> None:
    if waiting is None:
        fcntl.flock(handle, fcntl.LOCK_EX)
        return
    while True:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            waiting()
            time.sleep(RETRY_SECONDS)


def is_held(path: Path) -> bool:
    """True when another process holds the lock on ``path`` right now."""
    if not path.exists():
        return False
    with path.open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
        return False


def holder(path: Path) -> str | None:
    """Who holds the lock on ``path``, as the kernel lists it (``/proc/locks``): ``pid 4242
    (its command line)``; None when nobody does, or it cannot be known (no ``/proc``, a holder
    in another pid namespace)."""
    try:
        found = path.stat()
        table = Path("/proc/locks").read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    where = f"{os.major(found.st_dev):02x}:{os.minor(found.st_dev):02x}:{found.st_ino}"
    for line in table.splitlines():
        # "1: FLOCK  ADVISORY  WRITE 4242 fe:00:2581868 0 EOF"; a waiter's has "->" after "1:"
        fields = line.split()
        if fields[1:2] == ["FLOCK"] and fields[5:6] == [where] and fields[4].isdigit():
            return _described(int(fields[4])) if int(fields[4]) else None
    return None


def _described(pid: int) -> str:
    try:
        command = " ".join(psutil.Process(pid).cmdline())
    except psutil.Error:
        return f"pid {pid}"
    return f"pid {pid} ({command[:120]})" if command else f"pid {pid}"
