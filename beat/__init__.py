"""Periodic schedule: ``celery -A beat beat`` (``cw beat`` runs this).

The schedule itself (``beat_schedule``: the reconcile task every RECONCILE_SECONDS) is part of
the shared configuration in :mod:`cw.celeryapp`, so workers and beat agree on task names.
"""

from __future__ import annotations

from cw.celeryapp import make_app
from cw.settings import Settings

app = make_app(lambda: Settings.load())
