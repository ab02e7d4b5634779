"""The merge worker's control worker: the reconciler's one-slot worker, forked from it.

The reconciler reads this host's merge lock and agent processes, so it runs beside the merge
worker, and in a worker of its own so that a pass never waits behind a long merge. The merge
worker forks it once it has loaded everything and frozen it (workers/sharing.py), before
either connects to the broker: the two share those pages, and the pair holds little more
memory than the merge worker alone (docs/benchmarks.md). It gets SIGTERM when the merge
worker ends, and a merge worker shutting down stops it first (workers/shutdown.py). One that
ends while its merge worker runs (killed, out of memory) is started again, as a process of
its own (``python -m workers.control``): forking is safe only before the merge worker's
threads start. Loaded with the worker (the app's ``include``).
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
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
#: A control worker that ended is started again this long after, at the soonest.
RESTART_PAUSE_SECONDS = 5.0
#: Set once the merge worker shuts down: its control worker's end is then no failure.
stopping = threading.Event()


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
        level = sender.loglevel
        level = logging.getLevelName(level) if isinstance(level, int) else str(level)
        again = [sys.executable, "-m", __name__, str(sender.hostname), level, str(me.pid)]
        watch = threading.Thread(target=_keep_running, args=(pid, again), name="cw-control-watch")
        watch.daemon = True
        watch.start()
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


def _keep_running(pid: int, again: list[str]) -> None:
    """In the merge worker: wait for its control worker; one that ends while the merge worker
    runs is started again (without it no reconciler pass runs here, and nothing says so)."""
    while True:
        why = _ended(pid)
        if stopping.is_set():
            return
        logger.error("the control worker (pid %s) %s: starting another", pid, why)
        if stopping.wait(RESTART_PAUSE_SECONDS):
            return
        child = subprocess.Popen(again)
        forked[child.pid] = defaults.CONTROL_QUEUE
        pid = child.pid


def _ended(pid: int) -> str:
    """Once the child ``pid`` has ended: how."""
    try:
        _, status = os.waitpid(pid, 0)
    except ChildProcessError:  # reaped by another waiter: watch it go instead
        while psutil.pid_exists(pid):
            time.sleep(1.0)
        return "ended"
    if os.WIFSIGNALED(status):
        return f"was killed by signal {os.WTERMSIG(status)}"
    return f"exited with status {os.waitstatus_to_exitcode(status)}"


def _argv(merge_node: str, loglevel: int | str) -> list[str]:
    """``celery worker`` of the control queue, named after the merge worker."""
    name, _, host = merge_node.partition("@")
    node = f"{name}-control@{host}" if host else f"{name}-control"
    level = logging.getLevelName(loglevel) if isinstance(loglevel, int) else loglevel
    argv = worker_argv(defaults.CONTROL_QUEUE, 1, node, level)
    return argv[argv.index("worker") :]


def main(merge_node: str, loglevel: str, parent: str) -> int:
    """A control worker started again by its merge worker (``python -m workers.control``)."""
    from workers import app

    forked[os.getpid()] = defaults.CONTROL_QUEUE
    processes.die_with_parent(int(parent))
    processes.set_name(NAME)
    try:
        app.worker_main(_argv(merge_node, loglevel))
    except SystemExit as stop:
        return stop.code if isinstance(stop.code, int) else int(stop.code is not None)
    return 0


signals.worker_init.connect(fork_control_worker)

if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
