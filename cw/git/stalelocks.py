"""Git's own lock files (``index.lock``, ``refs/heads/x.lock``) that a killed git left behind:
every later git command on them fails until they go. Stale is old and open in no process."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from cw.defaults import GIT_LOCK_STALE_SECONDS

logger = logging.getLogger(__name__)


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
