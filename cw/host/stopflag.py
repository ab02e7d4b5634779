"""A stop that a signal handler may set.

``threading.Event.set()`` in a handler can deadlock: the handler runs in the main thread
between two bytecodes, and if those are inside the same event's ``wait`` (which holds the
event's lock for a moment on the way in and out), ``set`` waits for that lock for ever. Seen
as a ``cw status --watch`` that Ctrl-C could not stop. Here the handler only flips a flag and
writes a byte down a pipe; a wait is a ``select`` on that pipe, which the byte ends at once.
"""

from __future__ import annotations

import contextlib
import os
import select


class StopFlag:
    """Set once (from a signal handler or any thread), never cleared; waits end when set."""

    def __init__(self) -> None:
        self._set = False
        self._read, self._write = os.pipe()
        os.set_blocking(self._write, False)

    def set(self) -> None:
        self._set = True
        with contextlib.suppress(OSError):  # the pipe is full or closed: a wake-up is pending
            os.write(self._write, b"\0")

    def is_set(self) -> bool:
        return self._set

    def wait(self, timeout: float | None = None) -> bool:
        """Until set, or ``timeout`` seconds; whether it is set."""
        if not self._set:
            select.select([self._read], [], [], timeout)
        return self._set

    def close(self) -> None:
        for fd in (self._read, self._write):
            with contextlib.suppress(OSError):
                os.close(fd)
