"""Periodic schedule: ``celery -A beat beat`` (``cw beat`` runs this).

The schedule itself (``beat_schedule``: the reconcile task every RECONCILE_SECONDS) is part of
the shared configuration in :mod:`cw.transport.celeryapp`, so workers and beat agree on task names.
"""

from __future__ import annotations

from cw.settings import Settings
from cw.transport.celeryapp import make_app

app = make_app(lambda: Settings.load())
