"""Warm shutdown that does not wait an hour: the worker's running agents are interrupted.

Celery's warm shutdown waits for running tasks, and an agent may run for an hour. When the
worker's main process begins shutting down, its running attempts are told to end (the agents
get SIGTERM, their heartbeats see the request, and so does the lease of an attempt in one of
cw's git steps, which kills the step); each commits its work and its task becomes ready again,
to resume the same session when a worker starts. Loaded with the worker (the
app's ``include``), never by a plain import of :mod:`workers`.
"""

from __future__ import annotations

import os
import signal
from typing import Any

import psutil
from celery import signals

from cw import defaults
from cw.agents.attempts import interrupt_attempts
from cw.host import processes
from workers import control, runtime, runtime_opened, serves


def interrupt_agents(sender: Any = None, **_: Any) -> None:
    """Runs in the worker's main process; ``sender`` is the worker's node name. Its store is
    made when an agent worker is ready (workers/housekeeping.py), before any attempt starts:
    without it there is nothing to interrupt (a merge worker, or one stopped while starting),
    and making it here, in a signal's handler, imported the database driver on top of the
    import the signal interrupted, and failed."""
    if not runtime_opened():
        return
    _settings, store = runtime()
    interrupt_attempts(store, worker=str(sender), pid=os.getpid())


def stop_control_worker(**_: Any) -> None:
    """A merge worker shutting down stops its control worker (workers/control.py) at once, so
    both stop side by side; its watch does not start it again."""
    control.stopping.set()
    for child in _control_workers():
        processes.signal_pid(child.pid, signal.SIGTERM)


def wait_for_control_worker(**_: Any) -> None:
    """The merge worker's last act: its control worker is gone first, so `cw worker --merge`
    returns only once both are."""
    processes.stop_processes(_control_workers(), defaults.CONTROL_STOP_SECONDS)


def end_pool_process_at_once(exitcode: int | None = 0, **_: Any) -> None:
    """Runs in a pool process as it ends cleanly, which cw's workers do only when the worker
    stops (no task limit is set): billiard would keep the process a second longer after telling
    the worker it ends, so an idle worker took over a second to stop. The worker needs nothing
    more from it: it sees the process end, and the process has no task in hand."""
    if not exitcode:
        os._exit(0)


def exit_at_once(sender: Any = None, **_: Any) -> None:
    """The worker's last act, once it has stopped consuming, finished its tasks, ended its pool
    and closed its broker connection: it exits at once (:func:`processes.exit_now`). Only in a
    Celery worker serving one of cw's queues, never in a process that merely loaded this."""
    if any(serves(psutil.Process(), queue) for queue in defaults.QUEUES):
        processes.exit_now(getattr(sender, "exitcode", None) or 0)


def _control_workers() -> list[psutil.Process]:
    me = psutil.Process()
    if not serves(me, defaults.MERGE_QUEUE):
        return []
    return [child for child in me.children() if serves(child, defaults.CONTROL_QUEUE)]


signals.worker_shutting_down.connect(interrupt_agents)
signals.worker_shutting_down.connect(stop_control_worker)
signals.worker_shutdown.connect(wait_for_control_worker)
signals.worker_shutdown.connect(exit_at_once)  # after the wait above: receivers run in order
signals.worker_process_shutdown.connect(end_pool_process_at_once)
