"""Server-sent events: a change of the district reaches open pages, a transcript streams.

One :class:`Watch` per server polls the database's change marker every ``POLL_SECONDS`` in a
thread and wakes every open ``/events`` stream when it moves; each page then re-fetches what it
shows. A transcript stream reads its agent's events file from the offset it has sent, and
carries the change events too: a page holds one stream (a browser opens six to one host).

The watch also notices a SQLite file replaced under it (the district deleted and initialised
again): the pooled connections still read the old file, so they are dropped; a file gone for
good stops the server.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import os
from collections.abc import Callable
from pathlib import Path

from tornado.ioloop import IOLoop, PeriodicCallback
from tornado.iostream import StreamClosedError
from tornado.locks import Condition
from tornado.web import RequestHandler

from cw.defaults import MAX_ROW_ID
from cw.store import Store, TransientDatabaseError
from cw.web import board, transcripts

logger = logging.getLogger(__name__)

POLL_SECONDS = 0.25
#: A comment line this often keeps proxies from closing an idle stream.
KEEPALIVE_SECONDS = 15.0


class Watch:
    """The district's change marker, as of the last poll; ``wait`` until it moves.

    ``gone`` is called once the database file is gone; ``self.gone`` then says why.
    """

    def __init__(self, store: Store, gone: Callable[[], object] = lambda: None) -> None:
        self.store = store
        self.marker = board.change_marker(store)
        self.gone: str | None = None
        self._on_gone = gone
        self._file = database_file(store)
        self._identity = _identity(self._file) if self._file else None
        self._moved = Condition()
        self._timer = PeriodicCallback(self._poll, POLL_SECONDS * 1000)

    def start(self) -> None:
        self._timer.start()

    def stop(self) -> None:
        self._timer.stop()

    async def _poll(self) -> None:
        if self._file is not None and not await self._still_there(self._file):
            return
        try:
            marker = await IOLoop.current().run_in_executor(None, board.change_marker, self.store)
        except TransientDatabaseError as error:  # the next poll tries again
            logger.warning("cannot read the change marker: %s", " ".join(str(error).split()))
            return
        if marker != self.marker:
            self.marker = marker
            self._moved.notify_all()

    async def _still_there(self, path: Path) -> bool:
        """Whether the database is still there; a new file at its path is opened afresh."""
        identity = await IOLoop.current().run_in_executor(None, _identity, path)
        if identity is None:
            self.gone = f"the district's database {path} is gone (deleted or moved): web stopped"
            self.stop()
            self._on_gone()
            return False
        if identity != self._identity:
            logger.warning("the district's database %s is a new file: reading it", path)
            self._identity = identity
            self.store.engine.dispose()
        return True

    async def wait(self, seen: str, timeout: float) -> None:
        """Return once the marker differs from ``seen``, or after ``timeout`` seconds."""
        if self.marker == seen:
            await self._moved.wait(timeout=datetime.timedelta(seconds=timeout))


def database_file(store: Store) -> Path | None:
    """The SQLite file the store reads (None: a server database, or one in memory)."""
    url = store.engine.url
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return None
    return Path(url.database)


def _identity(path: Path) -> tuple[int, int] | None:
    """The file's (device, inode): another file at the same path has another (None: none)."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return None
    return info.st_dev, info.st_ino


class EventStream(RequestHandler):
    """A response that stays open and carries server-sent events."""

    def start_stream(self) -> None:
        self.set_header("Content-Type", "text/event-stream")
        self.set_header("Cache-Control", "no-cache")

    async def send(self, text: str) -> bool:
        """Write and flush; False once the client has gone."""
        try:
            self.write(text)
            await self.flush()
        except StreamClosedError:
            return False
        return True


def event(kind: str, data: str, id: str | None = None) -> str:
    """One server-sent event; each line of ``data`` its own ``data:`` line."""
    head = f"id: {id}\n" if id is not None else ""
    lines = "".join(f"data: {line}\n" for line in data.split("\n"))
    return f"{head}event: {kind}\n{lines}\n"


class ChangeStream(EventStream):
    async def stream(self, watch: Watch) -> None:
        self.start_stream()
        seen = None
        while True:
            if watch.marker != seen:
                seen = watch.marker
                text = event("change", seen)
            else:
                text = ": keep-alive\n\n"
            if not await self.send(text):
                return
            await watch.wait(seen, KEEPALIVE_SECONDS)


class TranscriptStream(EventStream):
    async def stream(self, path: Path, watch: Watch) -> None:
        """The transcript from where the client left off (Last-Event-ID, else ``?after=``),
        each batch's last line carrying the offset after it; ``change`` when the district's
        marker moves, so the page needs no second stream."""
        self.start_stream()
        since = self.request.headers.get("Last-Event-ID") or self.get_query_argument("after", "")
        offset, seen, idle = _offset(since), None, 0.0
        while True:
            lines, after = await IOLoop.current().run_in_executor(
                None, transcripts.read_from, path, offset
            )
            text = _lines(lines, after) if after != offset else ""
            if watch.marker != seen:
                seen = watch.marker
                text += event("change", seen)
            if text:
                offset, idle = after, 0.0
            elif idle >= KEEPALIVE_SECONDS:
                text, idle = ": keep-alive\n\n", 0.0
            if text and not await self.send(text):
                return
            await asyncio.sleep(POLL_SECONDS)
            idle += POLL_SECONDS


def _lines(lines: list[str], after: int) -> str:
    """Transcript lines as events, the last one with the offset after it as its id."""
    if not lines:
        return f"id: {after}\n\n"
    head = "".join(event("line", line) for line in lines[:-1])
    return head + event("line", lines[-1], id=str(after))


def _offset(last_event_id: str) -> int:
    """Where a reconnecting client left off; from the start for anything but a number."""
    digits = last_event_id.isascii() and last_event_id.isdigit()
    return int(last_event_id) if digits and int(last_event_id) <= MAX_ROW_ID else 0
