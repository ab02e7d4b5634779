"""The merge worker's control worker: the reconciler's one-slot worker, forked from it.

The reconciler reads this host's merge lock and agent processes, so it runs beside the merge
worker, and in a worker of its own so that a pass never waits behind a long merge. The merge
worker forks it once it has loaded everything and frozen it (workers/sharing.py), before
either connects to the broker: the two share those pages, and the pair holds little more
memory than the merge worker alone (docs/benchmarks.md). It gets SIGTERM when the merge
worker ends, and a merge worker shutting down stops it first (workers/shutdown.py). Loaded
with the worker (the app's ``include``).
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

import psutil
from celery import signals

from cw import defaults
from cw.errors import CwError
from cw.host import processes
from cw.transport.celeryapp import worker_argv
from workers import forked, serves

logger = logging.getLogger(__name__)

#: What ps and top call the control worker: its command line is the merge worker's.
NAME = "cw-control"


def fork_control_worker(sender: Any = None, **_: Any) -> None:
    """Runs in a worker's main process before it starts; forks in a merge worker only."""
    me = psutil.Process()
    if not serves(me, defaults.MERGE_QUEUE):
        return
    others = [t.name for t in threading.enumerate() if t is not threading.current_thread()]
    if others:  # a fork copies one thread: a lock another held would stay held in the child
        raise CwError(f"cannot fork the control worker: threads already run ({', '.join(others)})")
    pid = os.fork()
    if pid:
        forked[pid] = defaults.CONTROL_QUEUE
        return
    forked[os.getpid()] = defaults.CONTROL_QUEUE
    os._exit(_run_control_worker(sender, me.pid))  # never back into the merge worker's start-up


def _run_control_worker(merge_worker: Any, parent: int) -> int:
    """In the forked child: be the control worker until it stops; its exit status."""
    processes.die_with_parent()
    processes.set_name(NAME)
    if os.getppid() != parent:  # the merge worker ended before the line above
        return 0
    try:
        merge_worker.app.worker_main(_argv(str(merge_worker.hostname), merge_worker.loglevel))
    except SystemExit as stop:
        return stop.code if isinstance(stop.code, int) else int(stop.code is not None)
    except BaseException:
        logger.exception("the control worker failed")
        return 1
    return 0


def _argv(merge_node: str, loglevel: int | str) -> list[str]:
    """``celery worker`` of the control queue, named after the merge worker."""
    name, _, host = merge_node.partition("@")
    node = f"{name}-control@{host}" if host else f"{name}-control"
    level = logging.getLevelName(loglevel) if isinstance(loglevel, int) else loglevel
    argv = worker_argv(defaults.CONTROL_QUEUE, 1, node, level)
    return argv[argv.index("worker") :]


signals.worker_init.connect(fork_control_worker)
