"""A merge's checks outlive a merge worker that dies (each runs in its own process group):
they are marked, and the next merge stops them before it touches the integration worktree.

While a check runs, a file under ``.cw/locks`` says so; the merge lock's next holder that
finds it knows its holder died mid-check, and only then looks for the marked processes (a
scan of every process's environment, about 10 ms: made after every check, never at a merge
that runs none).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from cw.defaults import MERGE_CHECK_ENV
from cw.host import processes
from cw.settings import Settings

logger = logging.getLogger(__name__)

#: Under the lock directory while a merge's check runs.
CHECKING = "merge-check-running"
#: How long the next merge waits for a killed check to be gone before it resets the worktree.
GONE_WITHIN_SECONDS = 10.0


def marks(settings: Settings) -> Mapping[str, str]:
    """What a merge's check carries: which district's merge it checks."""
    return {MERGE_CHECK_ENV: str(settings.state_dir)}


@contextmanager
def checking(settings: Settings) -> Iterator[None]:
    """Say that a check runs (called with the merge lock held), for as long as it runs; once
    it has ended, stop what it left running in a session of its own (``setsid cmd &``): out of
    the check's process group, it would go on changing the integration worktree under the next
    check, and a bisection would blame a car that did nothing."""
    path = _path(settings)
    path.touch()
    try:
        yield
    finally:
        _stop_marked(settings, "a merge check left running")


def stop_left_checks(settings: Settings) -> None:
    """Called with the merge lock held: stop the checks of a merge worker that died during
    one."""
    if _path(settings).exists():
        _stop_marked(settings, "a merge check its merge worker left running")


def _stop_marked(settings: Settings, what: str) -> None:
    """Stop every process marked as this district's merge check (``what`` they are, for the
    log), then say none runs."""
    path = _path(settings)
    mine = str(settings.state_dir)
    groups = {pgid for pgid, value in processes.marked_groups(MERGE_CHECK_ENV) if value == mine}
    for pgid in groups:
        logger.warning("stopping %s (group %s)", what, pgid)
        processes.kill_group(pgid)
    deadline = time.monotonic() + GONE_WITHIN_SECONDS
    while any(processes.group_alive(g) for g in groups) and time.monotonic() < deadline:
        time.sleep(0.05)  # a process in uninterruptible I/O dies when it leaves it
    path.unlink(missing_ok=True)


def _path(settings: Settings) -> Path:
    return settings.lock_dir / CHECKING
