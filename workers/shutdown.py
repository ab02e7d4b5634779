"""Warm shutdown that does not wait an hour: the worker's running agents are interrupted.

Celery's warm shutdown waits for running tasks, and an agent may run for an hour. When the
worker's main process begins shutting down, its running attempts are told to end (the agents
get SIGTERM, their heartbeats see the request); each commits its work and its task becomes
ready again, to resume the same session when a worker starts. Loaded with the worker (the
app's ``include``), never by a plain import of :mod:`workers`.
"""

from __future__ import annotations

import signal
from typing import Any

import psutil
from celery import signals

from cw import defaults, processes
from cw.attempts import interrupt_attempts
from workers import runtime


def interrupt_agents(sender: Any = None, **_: Any) -> None:
    """Runs in the worker's main process; ``sender`` is the worker's node name."""
    _settings, store = runtime()
    interrupt_attempts(store, worker=str(sender))


def stop_control_worker(**_: Any) -> None:
    """A merge worker shutting down stops the control worker `cw worker --merge` started beside
    it (its child), at once so both stop side by side."""
    for child in _control_workers():
        processes.signal_pid(child.pid, signal.SIGTERM)


def wait_for_control_worker(**_: Any) -> None:
    """The merge worker's last act: its control worker is gone first, so `cw worker --merge`
    returns only once both are."""
    processes.stop_processes(_control_workers(), defaults.CONTROL_STOP_SECONDS)


def _control_workers() -> list[psutil.Process]:
    me = psutil.Process()
    if not serves(me, defaults.MERGE_QUEUE):
        return []
    return [child for child in me.children() if serves(child, defaults.CONTROL_QUEUE)]


def serves(proc: psutil.Process, queue: str) -> bool:
    """Whether ``proc`` is a Celery worker of ``queue`` (``-Q queue`` on its command line)."""
    try:
        argv = proc.cmdline()
    except psutil.Error:
        return False
    return "-Q" in argv and argv[argv.index("-Q") + 1 :][:1] == [queue]


signals.worker_shutting_down.connect(interrupt_agents)
signals.worker_shutting_down.connect(stop_control_worker)
signals.worker_shutdown.connect(wait_for_control_worker)
