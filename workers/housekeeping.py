"""Each agent worker keeps its own host tidy: its worktrees of tasks done or cancelled more than
``stale_worktree_seconds`` ago are removed (uncommitted changes committed to the task's branch
first), as ``cw gc`` removes them. On a host without the merge worker nothing else would: the
merge worker removes only its own host's. An agent here that no running attempt owns (its
worker died, its task went on elsewhere) is stopped. Loaded with the worker (the app's
``include``)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import psutil
from celery import signals

from cw import defaults
from cw.errors import CwError
from cw.maintenance.gc import clean_host_worktrees
from cw.maintenance.repairs import stop_stray_agents
from cw.settings import Settings
from cw.store import Store, TransientDatabaseError
from workers import runtime, serves

logger = logging.getLogger(__name__)


def start_housekeeping(**_: Any) -> None:
    """Runs in an agent worker's main process once it is ready: a daemon thread, so it ends
    with the worker."""
    if not serves(psutil.Process(), defaults.AGENTS_QUEUE):
        return
    settings, store = runtime()
    thread = threading.Thread(
        target=_keep_tidy, args=(settings, store), name="cw-housekeeping", daemon=True
    )
    thread.start()


def _keep_tidy(settings: Settings, store: Store) -> None:
    pause = min(defaults.HOUSEKEEPING_SECONDS, settings.stale_worktree_seconds)
    while True:
        time.sleep(pause)
        for what, chore in CHORES:
            try:
                chore(settings, store)
            except (CwError, OSError, TransientDatabaseError) as exc:
                logger.warning("housekeeping: could not look at %s: %s", what, exc)


def _remove_finished_worktrees(settings: Settings, store: Store) -> None:
    """Remove this host's worktrees of tasks finished ``stale_worktree_seconds`` ago."""
    report = clean_host_worktrees(settings, store, time.time() - settings.stale_worktree_seconds)
    for item in report.items:
        if item.removed:
            logger.info("housekeeping: removed worktree %s: %s", item.target, item.reason)


def _stop_stray_agents(settings: Settings, store: Store) -> None:
    """Stop this district's agents here that no running attempt owns."""
    for line in stop_stray_agents(settings, store):
        logger.warning("housekeeping: %s: no running attempt owned it", line)


CHORES: list[tuple[str, Callable[[Settings, Store], None]]] = [
    ("this host's worktrees", _remove_finished_worktrees),
    ("the agents on this host", _stop_stray_agents),
]

signals.worker_ready.connect(start_housekeeping)
