"""The running server seen from outside: its pid file, its state file, and stopping it.

Light on purpose: ``cw server stop`` imports only this (no Celery, no database), so the
command itself adds little to the time a stop takes.
"""

from __future__ import annotations

import json
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from cw.errors import CwError
from cw.host import pidfile, processes
from cw.settings import Settings

PID_FILE = "server.pid"
STATE_FILE = "server.json"
POLL_SECONDS = 0.2  # the supervisor's watch of its children
STOP_POLL_SECONDS = 0.02  # `cw server stop` waiting for the server to be gone


@dataclass(frozen=True)
class ChildHealth:
    """One process the server started, as its state file names it, and whether it still runs."""

    pid: int
    started_at: float
    log: str
    alive: bool


@dataclass(frozen=True)
class ServerHealth:
    """``cw server status``: the server, each of its children, and what they all need."""

    running: bool
    pid: int | None
    started_at: float | None
    children: dict[str, ChildHealth]
    broker: bool  # reachable
    database: bool  # reachable
    flower: str | None  # its address, when the server runs it
    flower_credentials: str | None  # where its login is
    web: str | None  # the live page's address, when the server runs it
    healthy: bool  # running, every child alive, broker and database reachable


def pid_path(settings: Settings) -> Path:
    return settings.state_dir / PID_FILE


def state_path(settings: Settings) -> Path:
    return settings.state_dir / STATE_FILE


def stop_server(settings: Settings, *, timeout: float, force: bool) -> int | None:
    """SIGTERM to the running server (twice: forced) and wait; its pid, or None if none ran."""
    pid = pidfile.holder(pid_path(settings))
    if pid is None:
        return None
    if pid <= 0:
        raise CwError(f"{pid_path(settings)} is locked but names no process; try again")
    processes.signal_pid(pid, signal.SIGTERM)
    if force:
        time.sleep(POLL_SECONDS)
        processes.signal_pid(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    # The lock goes with the supervisor's last step; the process exits a moment later.
    while pidfile.holder(pid_path(settings)) is not None or alive(pid):
        if time.monotonic() > deadline:
            raise CwError(
                f"the server (pid {pid}) is still stopping after {timeout:.0f} s: "
                "`cw server stop --force` kills its children"
            )
        time.sleep(STOP_POLL_SECONDS)
    return pid


def alive(pid: Any) -> bool:
    """Whether ``pid`` names a running process (a zombie is not)."""
    if not isinstance(pid, int):
        return False
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    tmp.replace(path)


def read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
