"""A worker's pool processes share its memory: before the pool forks, everything the main
process has loaded is moved out of the garbage collector's reach (``gc.freeze``), so no
collection in a child touches, and copies, the pages it shares with its parent. An idle
``cw worker -c 2`` holds about a quarter less memory (docs/benchmarks.md). Loaded with the
worker (the app's ``include``)."""

from __future__ import annotations

import gc
from typing import Any

from celery import signals


def freeze_before_fork(**_: Any) -> None:
    """Runs in a worker's main process before its pool starts."""
    gc.collect()
    gc.freeze()


signals.worker_init.connect(freeze_before_fork)
