"""Which rows of the ``events`` table the watcher has read, so it reads each one once.

An event's id is taken when it is inserted, but other readers see it only once its
transaction commits. On PostgreSQL a transaction that took id N can commit after N+1 was
read: a reader that only asks for ids above the highest it saw would skip N for good. So the
ids below the highest seen that have not been seen yet (gaps) are asked for again, each for
:data:`GAP_SECONDS`; after that it is taken for an id no transaction will commit (one that
rolled back). SQLite lets one writer in at a time and so has no gaps: it pays nothing.

Events are marked read (:meth:`EventCursor.seen`) only once their files are written: a
failure (a busy database) reads them again at the next turn, until it has failed too often in
a row; then they are given up, with a warning (their files show the rows' next change).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable

from cw.store.read import EventRow
from cw.store.snapshot import Snapshot

#: How long an unseen id below the highest seen is looked for: longer than any transaction
#: that writes an event holds it open.
GAP_SECONDS = 60.0
#: The most unseen ids looked for (the oldest are given up first).
MAX_GAPS = 10_000
#: At the start, the ids this far below the highest that are missing are looked for too.
START_WINDOW = 1_000

logger = logging.getLogger(__name__)


class EventCursor:
    """The highest event id read, and the ids below it not read yet (with when to give up)."""

    def __init__(self, tries: int) -> None:
        self.last = 0
        self._gaps: dict[int, float] = {}  # id -> when to stop looking for it
        self._tries = tries  # turns in a row the same events may fail before they are given up
        self._failed = 0

    def start(self, snapshot: Snapshot) -> None:
        """Start after the newest event; the ids missing just below it may still commit."""
        self.last = snapshot.last_event_id()
        self._gaps = {}
        low = max(self.last - START_WINDOW, 0)
        recent = snapshot.events_after(low, limit=self.last - low)
        self._open_gaps(low, (e.id for e in recent), self.last)

    def read(self, snapshot: Snapshot) -> list[EventRow]:
        """The events not read yet, oldest first (nothing is marked read: see :meth:`seen`)."""
        self._expire()
        late = snapshot.events(list(self._gaps)) if self._gaps else []  # only those ids
        return late + snapshot.events_after(self.last)

    def seen(self, events: Iterable[EventRow]) -> None:
        """Mark ``events`` (as :meth:`read` returned them) read: they are not returned again."""
        self._failed = 0
        ids = sorted(e.id for e in events)
        for event_id in ids:
            self._gaps.pop(event_id, None)
        fresh = [i for i in ids if i > self.last]
        if fresh:
            self._open_gaps(self.last, fresh, fresh[-1])
            self.last = fresh[-1]

    def failed(self, events: list[EventRow]) -> None:
        """Rendering ``events`` failed: they are read again, unless that failed too often."""
        self._failed += 1
        if self._failed >= self._tries:
            ids = f"{events[0].id}..{events[-1].id}" if events else "none"
            logger.warning("events %s: not rendered after %d tries; given up", ids, self._tries)
            self.seen(events)

    def _open_gaps(self, low: int, ids: Iterable[int], high: int) -> None:
        """Look for the ids in (low, high] that are not in ``ids`` (sorted)."""
        until = time.monotonic() + GAP_SECONDS
        previous = low
        for event_id in [*ids, high + 1]:
            for missing in range(previous + 1, min(event_id, previous + 1 + MAX_GAPS)):
                self._gaps[missing] = until
            previous = max(previous, event_id)
        for event_id in sorted(self._gaps)[: max(len(self._gaps) - MAX_GAPS, 0)]:
            del self._gaps[event_id]

    def _expire(self) -> None:
        now = time.monotonic()
        for event_id in [i for i, until in self._gaps.items() if until <= now]:
            del self._gaps[event_id]

    @property
    def gaps(self) -> list[int]:
        """The ids still looked for, lowest first."""
        return sorted(self._gaps)
