"""Server-sent events: a change of the district reaches open pages, a transcript streams.

One :class:`Watch` per server polls the database's change marker every ``POLL_SECONDS`` in a
thread and wakes every open ``/events`` stream when it moves; each page then re-fetches what it
shows. A transcript stream reads its agent's events file from the offset it has sent.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
from pathlib import Path

from tornado.ioloop import IOLoop, PeriodicCallback
from tornado.iostream import StreamClosedError
from tornado.locks import Condition
from tornado.web import RequestHandler

from cw.defaults import MAX_ROW_ID
from cw.store import Store
from cw.web import board, transcripts

logger = logging.getLogger(__name__)

POLL_SECONDS = 0.25
#: A comment line this often keeps proxies from closing an idle stream.
KEEPALIVE_SECONDS = 15.0


class Watch:
    """The district's change marker, as of the last poll; ``wait`` until it moves."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.marker = board.change_marker(store)
        self._moved = Condition()
        self._timer = PeriodicCallback(self._poll, POLL_SECONDS * 1000)

    def start(self) -> None:
        self._timer.start()

    def stop(self) -> None:
        self._timer.stop()

    async def _poll(self) -> None:
        marker = await IOLoop.current().run_in_executor(None, board.change_marker, self.store)
        if marker != self.marker:
            self.marker = marker
            self._moved.notify_all()

    async def wait(self, seen: str, timeout: float) -> None:
        """Return once the marker differs from ``seen``, or after ``timeout`` seconds."""
        if self.marker == seen:
            await self._moved.wait(timeout=datetime.timedelta(seconds=timeout))


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
    async def stream(self, path: Path) -> None:
        self.start_stream()
        offset = _offset(self.request.headers.get("Last-Event-ID", ""))
        idle = 0.0
        while True:
            lines, after = await IOLoop.current().run_in_executor(
                None, transcripts.read_from, path, offset
            )
            text = "".join(event("line", line) for line in lines)
            if after != offset:
                text += f"id: {after}\n\n"
                offset, idle = after, 0.0
            elif idle >= KEEPALIVE_SECONDS:
                text, idle = ": keep-alive\n\n", 0.0
            if text and not await self.send(text):
                return
            await asyncio.sleep(POLL_SECONDS)
            idle += POLL_SECONDS


def _offset(last_event_id: str) -> int:
    """Where a reconnecting client left off; from the start for anything but a number."""
    digits = last_event_id.isascii() and last_event_id.isdigit()
    return int(last_event_id) if digits and int(last_event_id) <= MAX_ROW_ID else 0
