"""Free TCP ports for servers the tests start, chosen so that nothing else takes them first.

A port the kernel hands out for ``bind(0)`` comes from the ephemeral range, the same range it
draws from for every outgoing connection: between the probe and the server's own ``bind``, a
client socket of another test (to Redis, PostgreSQL, a mock API) may take it, and the server
fails with "Address already in use". These ports come from below that range, and each is
claimed with a lock file held until the test process ends, so two test processes (xdist
workers, or suites side by side) never pick the same one.
"""

from __future__ import annotations

import fcntl
import os
import random
import socket
import tempfile
from pathlib import Path
from typing import IO

FIRST_PORT = 20_000
END_PORT = 32_768  # Linux's ephemeral range starts here by default
_claimed: list[IO[bytes]] = []  # the lock files this process holds, open until it exits


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on and no other live test process claimed."""
    claims = Path(tempfile.gettempdir()) / f"cw-test-ports-{os.getuid()}"
    claims.mkdir(exist_ok=True)
    span = END_PORT - FIRST_PORT
    start = random.randrange(span)
    for i in range(span):
        port = FIRST_PORT + (start + i) % span
        if _claim(claims / str(port)) and _bindable(port):
            return port
    raise AssertionError(f"no free port between {FIRST_PORT} and {END_PORT}")


def _claim(path: Path) -> bool:
    lock = open(path, "ab")  # held open until the process exits
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        lock.close()
        return False
    _claimed.append(lock)
    return True


def _bindable(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True
