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

FIRST_PORT = 20_000
END_PORT = 32_768  # Linux's ephemeral range starts here by default
_claimed: list[int] = []  # the lock files this process holds, open until it exits


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
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)  # bare: nothing warns at exit
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return False
    _claimed.append(fd)
    return True


def _bindable(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True
