"""Warm shutdown that does not wait an hour: the worker's running agents are interrupted.

Celery's warm shutdown waits for running tasks, and an agent may run for an hour. When the
worker's main process begins shutting down, its running attempts are told to end (the agents
get SIGTERM, their heartbeats see the request); each commits its work and its task becomes
ready again, to resume the same session when a worker starts. Loaded with the worker (the
app's ``include``), never by a plain import of :mod:`workers`.
"""

from __future__ import annotations

from typing import Any

from celery import signals

from cw.attempts import interrupt_attempts
from workers import runtime


def interrupt_agents(sender: Any = None, **_: Any) -> None:
    """Runs in the worker's main process; ``sender`` is the worker's node name."""
    _settings, store = runtime()
    interrupt_attempts(store, worker=str(sender))


signals.worker_shutting_down.connect(interrupt_agents)
