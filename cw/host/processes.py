"""Child processes that never outlive their owner: own process group, logs, timeouts."""

from __future__ import annotations

import ctypes
import functools
import logging
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, BinaryIO

import psutil

from cw.host.secrets import Redactor, redactor

logger = logging.getLogger(__name__)

#: prctl(2) option: orphaned descendants are re-parented to this process instead of init.
PR_SET_CHILD_SUBREAPER = 36
#: prctl(2) option: the signal this process gets when its parent exits.
PR_SET_PDEATHSIG = 1
#: prctl(2) option: the name ps and top show for this process (15 bytes at most).
PR_SET_NAME = 15

#: The longest one wait for a child's exit lasts; the supervision then looks again.
LONGEST_POLL_SECONDS = 3600.0

#: Called every ``tick_seconds`` while the child runs; returning False stops the child.
Tick = Callable[[int], bool]


@dataclass(frozen=True)
class Launch:
    """How to run one agent process."""

    argv: Sequence[str]
    cwd: Path
    env: Mapping[str, str]
    stdin_text: str
    stdout: Path
    stderr: Path
    timeout: float  # wall clock, seconds
    grace: float  # between SIGTERM and SIGKILL
    tick_seconds: float
    on_line: Callable[[str], None] | None = None  # each stdout line as it arrives
    # Output passes through this on its way to the logs: no secret of the worker is written.
    redact: Redactor = field(default_factory=lambda: redactor(os.environ))


@dataclass(frozen=True)
class Finished:
    exit_code: int
    timed_out: bool
    stopped: bool  # the tick callback asked for a stop
    seconds: float


def run_in_group(launch: Launch, tick: Tick) -> Finished:
    """Run in a new session with output in files (redacted); the whole group is dead on return."""
    launch.stdout.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with open(launch.stdout, "ab") as out, open(launch.stderr, "ab") as err:
        proc = subprocess.Popen(
            list(launch.argv),
            cwd=launch.cwd,
            env=dict(launch.env),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        assert proc.stdout is not None and proc.stderr is not None
        readers = [
            _copy_lines(proc.stdout, out, launch.redact, launch.on_line),
            _copy_lines(proc.stderr, err, launch.redact, None),
        ]
        _feed(proc, launch.stdin_text)
        timed_out = stopped = False
        try:
            tick(proc.pid)  # record the new process group at once, not one interval later
            deadline = started + launch.timeout
            timed_out, stopped = _supervise(proc, deadline, tick, launch.tick_seconds)
        finally:  # a timeout, a stop, or a tick that raised: the group goes with us
            if proc.poll() is None:
                terminate_group(proc.pid, launch.grace, proc)
            code = proc.wait()
            kill_group(proc.pid)  # whatever the child left behind in its group
            for reader in readers:
                reader.join(timeout=launch.grace)
    return Finished(code, timed_out, stopped, time.monotonic() - started)


def _copy_lines(
    source: IO[bytes],
    sink: BinaryIO,
    redact: Redactor,
    on_line: Callable[[str], None] | None,
) -> threading.Thread:
    """Copy a pipe to its file line by line, redacted, handing each line to ``on_line``."""

    def pump() -> None:
        for raw in iter(source.readline, b""):
            line = redact.data(raw)
            sink.write(line)
            sink.flush()
            if on_line is None:
                continue
            try:
                on_line(line.decode(errors="replace").rstrip("\n"))
            except Exception:  # a parser bug must not stop the copy to the log
                logger.exception("stdout line handler failed")
        source.close()

    thread = threading.Thread(target=pump, name=f"copy-{source.fileno()}", daemon=True)
    thread.start()
    return thread


def _feed(proc: subprocess.Popen[bytes], text: str) -> None:
    # A writer thread: a child that never reads stdin must not block us on a full pipe.
    def write() -> None:
        assert proc.stdin is not None
        try:
            proc.stdin.write(text.encode())
            proc.stdin.close()
        except (BrokenPipeError, OSError):
            pass

    threading.Thread(target=write, daemon=True).start()


def _supervise(
    proc: subprocess.Popen[bytes], deadline: float, tick: Tick, tick_seconds: float
) -> tuple[bool, bool]:
    with _exit_watch(proc) as exited:
        while True:
            if exited(min(tick_seconds, max(deadline - time.monotonic(), 0.0))):
                return False, False
            if time.monotonic() >= deadline:
                return True, False
            if not tick(proc.pid):
                return False, True


@contextmanager
def _exit_watch(proc: subprocess.Popen[bytes]) -> Iterator[Callable[[float], bool]]:
    """A wait for the child's exit, up to some seconds, that wakes the moment it exits (a
    pidfd, Linux 5.3+). ``Popen.wait`` with a timeout polls in sleeps growing to 50 ms: up to
    50 ms lost after every agent, on the critical path of every chain of tasks."""
    try:
        pidfd = os.pidfd_open(proc.pid)
    except (AttributeError, OSError):  # not Linux, or an old kernel: Popen's polling
        yield lambda seconds: _waited(proc, seconds)
        return
    poller = select.poll()
    poller.register(pidfd, select.POLLIN)

    def exited(seconds: float) -> bool:
        # poll(2) counts milliseconds in an int: a longer wait (an infinite timeout) is cut
        ready = poller.poll(min(seconds, LONGEST_POLL_SECONDS) * 1000)
        return bool(ready) or proc.poll() is not None

    try:
        yield exited
    finally:
        os.close(pidfd)


def _waited(proc: subprocess.Popen[bytes], seconds: float) -> bool:
    try:
        proc.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        return False
    return True


def terminate_group(pgid: int, grace: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    """SIGTERM to the group, then SIGKILL after ``grace`` seconds."""
    signal_group(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and group_alive(pgid):
        if proc is not None and proc.poll() is not None and not group_alive(pgid):
            return
        time.sleep(0.05)
    kill_group(pgid)


def kill_group(pgid: int) -> None:
    signal_group(pgid, signal.SIGKILL)


def group_alive(pgid: int) -> bool:
    """Whether a process of the group still runs; zombies (dead, not yet reaped) do not."""
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return any(_runs_in(proc, pgid) for proc in psutil.process_iter())


def marked_groups(variable: str) -> set[tuple[int, str]]:
    """(process group, value) of every process this user may inspect, not in this process's
    own group, that was started with ``variable`` set: the environment a process got at its
    start, which its children inherit."""
    found, own = set(), os.getpgrp()
    for proc in psutil.process_iter():
        try:
            value = proc.environ().get(variable)
            pgid = os.getpgid(proc.pid)
        except (OSError, psutil.Error):  # gone, a zombie, or another user's
            continue
        if value is not None and pgid != own:
            found.add((pgid, value))
    return found


def _runs_in(proc: psutil.Process, pgid: int) -> bool:
    try:
        return os.getpgid(proc.pid) == pgid and proc.status() != psutil.STATUS_ZOMBIE
    except (OSError, psutil.Error):
        return False


def signal_pid(pid: int, sig: signal.Signals) -> None:
    """Send ``sig`` to one process that may be gone already."""
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def signal_group(pgid: int, sig: signal.Signals) -> None:
    """Send ``sig`` to a process group that may be gone already."""
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def start_group(
    argv: Sequence[str], *, cwd: Path, env: Mapping[str, str], log: Path
) -> subprocess.Popen[bytes]:
    """Start ``argv`` in a new session (its own process group), output appended to ``log``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        return subprocess.Popen(
            list(argv),
            cwd=cwd,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def die_with_parent(parent: int | None = None) -> None:
    """SIGTERM when the parent thread exits (Linux), even by SIGKILL: for a supervisor's
    children, which would otherwise run on unseen. With ``parent`` (its pid), one that has
    died before the request was in place ends this process now."""
    _prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if parent is not None and os.getppid() != parent:
        os.kill(os.getpid(), signal.SIGTERM)


def term_with_parent() -> Callable[[], None] | None:
    """For ``subprocess.Popen(preexec_fn=...)``: the child is sent SIGTERM when the thread
    that started it ends, its process killed with it (Linux). A child in a session of its own
    is out of its parent's process group: killing that group (a supervisor's stop) would leave
    it running. prctl is looked up here, in the parent: the child runs no loader before exec.
    None where the C library has no prctl."""
    prctl = _libc_prctl()
    if prctl is None:
        return None

    def request() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)

    return request


@functools.cache
def _libc_prctl() -> Callable[..., int] | None:
    try:
        found: Callable[..., int] = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    return found


def become_subreaper() -> bool:
    """Make orphaned descendants this process's children (Linux), so none escapes the tree."""
    return _prctl(PR_SET_CHILD_SUBREAPER, 1)


def set_name(name: str) -> bool:
    """Name this process for ps and top (Linux: ``/proc/PID/comm``, 15 bytes at most)."""
    return _prctl(PR_SET_NAME, ctypes.c_char_p(name.encode()[:15]))


def _prctl(option: int, value: int | ctypes.c_char_p) -> bool:
    """prctl(2) where the C library has it; whether it took."""
    try:
        return bool(ctypes.CDLL(None, use_errno=True).prctl(option, value, 0, 0, 0) == 0)
    except (OSError, AttributeError):
        return False


def descendants() -> list[psutil.Process]:
    """Every process below this one, grandchildren included."""
    try:
        return psutil.Process().children(recursive=True)
    except psutil.Error:
        return []


def kill_alive(procs: Iterable[psutil.Process]) -> list[psutil.Process]:
    """SIGKILL those still running (the same processes: psutil checks their start time)."""
    killed = []
    for proc in procs:
        try:
            if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                proc.kill()
                killed.append(proc)
        except psutil.Error:
            pass
    return killed


def stop_processes(procs: list[psutil.Process], grace: float) -> None:
    """SIGTERM each, wait up to ``grace`` seconds for all of them to end, SIGKILL the rest."""
    for proc in procs:
        try:
            proc.terminate()
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(procs, timeout=grace)
    kill_alive(alive)
    psutil.wait_procs(alive, timeout=grace)


def reap_adopted(keep: Iterable[int]) -> None:
    """Collect the exit status of adopted orphans that ended (a subreaper's duty); the
    children in ``keep`` are waited for by their owners."""
    own = set(keep)
    try:
        children = psutil.Process().children()
    except psutil.Error:
        return
    for child in children:
        if child.pid in own:
            continue
        try:
            if child.status() == psutil.STATUS_ZOMBIE:
                os.waitpid(child.pid, os.WNOHANG)
        except (psutil.Error, ChildProcessError):
            pass


def exit_now(code: int) -> None:
    """End a long-running process whose work is over (a stopped worker or server): logs and
    output flushed, then out at once, without tearing Celery and SQLAlchemy down object by
    object (over half a second on a small machine)."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os._exit(code)


def parent_started_at() -> float:
    """When this process's parent started (for a Celery pool process: its worker)."""
    try:
        return psutil.Process(os.getppid()).create_time()
    except psutil.Error:
        return time.time()
