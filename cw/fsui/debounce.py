"""The paths a person changed, each waiting to be read until it has been quiet a while.

watchdog's thread puts every changed path in :attr:`Debounce.changes`; the watcher's loop
collects them (:meth:`Debounce.wait`) and takes the ones quiet for :data:`DEBOUNCE_SECONDS`
(:meth:`Debounce.take`). A path whose reading failed for a moment (a busy database) is put
back (:meth:`Debounce.again`) and read at the next turn: nothing a person saved is dropped,
unless it fails turn after turn (then it is given up, with a warning, until it changes again).
"""

from __future__ import annotations

import logging
import queue
import time
from collections.abc import Callable, Iterable

#: Quiet time after a person's last change to a path before it is read.
DEBOUNCE_SECONDS = 0.05
#: An empty file is most often an editor between truncating it and writing it (``cat >``,
#: editors that save in place, a slow disk): it is read once it has stayed empty this long.
EMPTY_PATIENCE_SECONDS = 1.0

logger = logging.getLogger(__name__)


class Debounce:
    """Changed paths (under the mirror's root) and when each is due to be read."""

    def __init__(self, is_empty: Callable[[str], bool], tries: int) -> None:
        self.changes: queue.SimpleQueue[str] = queue.SimpleQueue()  # from any thread
        self._is_empty = is_empty
        self._tries = tries  # turns in a row a path may fail before it is given up
        self._failed: dict[str, int] = {}  # path -> failures in a row
        self._due: dict[str, float] = {}  # path -> when to look at it
        self._emptied: set[str] = set()  # found empty when due: given EMPTY_PATIENCE_SECONDS

    def wait(self, timeout: float) -> None:
        """Collect changed paths for up to ``timeout`` seconds (returns at the first one)."""
        try:
            rel = self.changes.get(timeout=max(timeout, 0.0))
        except queue.Empty:
            return
        due = time.monotonic() + DEBOUNCE_SECONDS
        while True:
            self._due[rel] = due
            self._emptied.discard(rel)  # written again: the debounce starts over
            self._failed.pop(rel, None)
            try:
                rel = self.changes.get_nowait()
            except queue.Empty:
                return

    def later(self, rel: str) -> None:
        """A person is writing ``rel``: look at it again once it has been quiet a while."""
        self._due[rel] = time.monotonic() + DEBOUNCE_SECONDS

    def take(self, *, force: bool = False) -> list[str]:
        """The paths quiet for the debounce time (all of them with ``force``), sorted; they
        wait no more (:meth:`again` puts them back)."""
        now = time.monotonic()
        ready = sorted(r for r, due in self._due.items() if force or self._ready(r, due, now))
        for rel in ready:
            del self._due[rel]
        return ready

    def again(self, rels: Iterable[str]) -> None:
        """Reading these failed: they are due at the next turn (unless due later already)."""
        now = time.monotonic()
        for rel in rels:
            self._failed[rel] = self._failed.get(rel, 0) + 1
            if self._failed[rel] < self._tries:
                self._due.setdefault(rel, now)
            else:
                del self._failed[rel]
                logger.warning(
                    "%s: not read after %d tries; save it again to retry", rel, self._tries
                )

    def done(self, rels: Iterable[str]) -> None:
        """These were read: their failures in a row start over."""
        for rel in rels:
            self._failed.pop(rel, None)

    def next_due(self, idle: float) -> float:
        """Seconds until the next path is due (``idle`` when none waits)."""
        if not self._due:
            return idle
        return max(0.0, min(self._due.values()) - time.monotonic())

    def _ready(self, rel: str, due: float, now: float) -> bool:
        """Whether ``rel`` is due; an empty file gets EMPTY_PATIENCE_SECONDS (its writer may
        not have written yet) and is due again then."""
        if due > now:
            return False
        if rel not in self._emptied and self._is_empty(rel):
            self._emptied.add(rel)
            self._due[rel] = due - DEBOUNCE_SECONDS + EMPTY_PATIENCE_SECONDS
            return False
        self._emptied.discard(rel)
        return True
