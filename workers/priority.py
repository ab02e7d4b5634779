"""An agent worker runs at a lower CPU priority (``agent_nice``) than the merge and control
workers: its pool processes, their git work and the agents they start inherit it, so on a busy
machine a merge is never starved by the agents whose work it integrates. Loaded with the worker
(the app's ``include``)."""

from __future__ import annotations

import logging
import os
from typing import Any

import psutil
from celery import signals

from cw import defaults
from workers import runtime, serves

logger = logging.getLogger(__name__)


def lower_agent_priority(**_: Any) -> None:
    """Runs in a worker's main process before its pool starts: an agent worker becomes
    ``agent_nice`` nicer; the merge and control workers stay as they are."""
    if not serves(psutil.Process(), defaults.AGENTS_QUEUE):
        return
    settings, _store = runtime()
    if settings.agent_nice:
        now = os.nice(settings.agent_nice)
        logger.info("agent worker at niceness %d (agent_nice %d)", now, settings.agent_nice)


signals.worker_init.connect(lower_agent_priority)
