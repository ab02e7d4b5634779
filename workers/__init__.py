"""Celery worker entry point: ``celery -A workers worker -Q agents`` (``cw worker`` runs this).

The app is configured lazily from :class:`cw.settings.Settings` (``CW_REPO`` or the current
directory), so importing this package connects to nothing.
"""

from __future__ import annotations

import os

from cw.settings import Settings
from cw.store import Store
from cw.transport.celeryapp import make_app

app = make_app(
    lambda: Settings.load(),
    include=[
        "workers.tasks",
        "workers.shutdown",
        "workers.housekeeping",
        "workers.priority",
        "workers.sharing",
    ],
)

_runtime: dict[int, tuple[Settings, Store]] = {}


def runtime() -> tuple[Settings, Store]:
    """This process's settings and store; a forked pool child makes its own engine."""
    pid = os.getpid()
    if pid not in _runtime:
        settings = Settings.load().require_initialized()
        _runtime.clear()
        _runtime[pid] = (settings, Store.open(settings.db_url))
    return _runtime[pid]
