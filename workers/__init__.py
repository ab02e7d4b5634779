"""Celery worker entry point: ``celery -A workers worker -Q agents`` (``cw worker`` runs this).

The app is configured lazily from :class:`cw.settings.Settings` (``CW_REPO`` or the current
directory), so importing this package connects to nothing.
"""

from __future__ import annotations

import os

import psutil

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
        "workers.control",  # after workers.sharing: the fork shares what it froze
    ],
)

_runtime: dict[int, tuple[Settings, Store]] = {}


def runtime() -> tuple[Settings, Store]:
    """This process's settings and store; a forked pool child makes its own engine."""
    pid = os.getpid()
    if pid not in _runtime:
        settings = Settings.load().require_database()
        _runtime.clear()
        _runtime[pid] = (settings, Store.open(settings.db_url))
    return _runtime[pid]


def runtime_opened() -> bool:
    """Whether this process has made its settings and store (:func:`runtime`) already."""
    return os.getpid() in _runtime


#: Processes whose command line does not say what they serve, by pid: the merge worker's
#: control worker is forked from it (workers/control.py), so it has its parent's.
forked: dict[int, str] = {}


def serves(proc: psutil.Process, queue: str) -> bool:
    """Whether ``proc`` is a Celery worker of ``queue``: as :data:`forked` says, else as its
    command line does (``-Q queue``)."""
    if proc.pid in forked:
        return forked[proc.pid] == queue
    try:
        argv = proc.cmdline()
    except psutil.Error:
        return False
    return "-Q" in argv and argv[argv.index("-Q") + 1 :][:1] == [queue]
