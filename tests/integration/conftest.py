"""A district for integration tests: a repository, its store, real Celery worker processes."""

from __future__ import annotations

import os
import secrets
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest

from cw.settings import Settings
from cw.store import Store
from cw.transport.celeryapp import make_app, worker_argv
from cw.transport.dispatch import dispatch_ready
from tests.chaos.reconciler import start_reconciler
from tests.claude.mock_api import MockAnthropic, Turn, tool
from tests.claude.real_cli import offline_env, require_claude_cli
from tests.conftest import CW, Processes, database_env, git
from tests.factories import spec
from tests.fakes.fake_claude_script import FAKE_CLAUDE, Run, write_scenario

ACTIVE = {"ready", "queued", "running", "merging"}
FAST = {"CW_LEASE": "3", "CW_HEARTBEAT": "0.5", "CW_AGENT_KILL_GRACE": "2"}


def seeded_hub(directory: Path) -> Path:
    """A bare hub in ``directory`` whose ``main`` has one commit, as hosts' clones start."""
    hub = directory / "hub.git"
    git(directory, "init", "-q", "--bare", "-b", "main", str(hub))
    seed = directory / "seed"
    git(directory, "init", "-q", "-b", "main", str(seed))
    (seed / "README.md").write_text("shared\n")
    git(seed, "add", "-A")
    git(seed, "commit", "-q", "-m", "first")
    git(seed, "push", "-q", str(hub), "main")
    return hub


@dataclass
class District:
    repo: Path
    settings: Settings
    store: Store
    processes: Processes
    env: dict[str, str] = field(default_factory=dict)  # extra environment for workers and cw
    inherit: bool = True  # start from os.environ (False: ``env`` is the whole environment)

    def start_worker(self, name: str, queue: str, count: int = 1) -> psutil.Process:
        """A worker exactly as ``cw worker`` starts it, named ``name``."""
        argv = worker_argv(queue, count, f"{name}@%h")
        proc = self.processes.start(argv, self.repo, self.child_env(), name)
        return psutil.Process(proc.pid)

    def start_workers(self, agents: int = 2) -> None:
        self.start_worker("agents", "agents", agents)
        self.start_worker("merge", "merge")

    def wait_for_workers(self, count: int = 2, timeout: float = 60) -> None:
        """Until ``count`` workers answer a remote-control ping: they consume their queues."""
        control = make_app(self.settings).control
        self.wait_for(lambda: len(control.ping(timeout=0.5)) >= count, timeout, "workers up")

    def child_env(self) -> dict[str, str]:
        base = dict(os.environ) if self.inherit else {}
        return {**base, **self.env, **self.settings.child_env()}

    def cw(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([*CW, *args], cwd=self.repo, env=self.child_env(),
                                capture_output=True, text=True, timeout=120)  # fmt: skip
        if check and result.returncode != 0:
            raise AssertionError(f"cw {' '.join(args)} -> {result.returncode}\n{result.stderr}")
        return result

    def submit(self, edges: dict[str, list[str]], verify: dict[str, str] | None = None) -> None:
        self.store.submit(spec(edges, verify=verify))
        dispatch_ready(self.store, make_app(self.settings), self.settings)

    def states(self) -> dict[str, str]:
        return {t["key"]: t["state"].value for t in self.store.task_rows()}

    def task(self, key: str) -> dict[str, object]:
        return self.store.task_detail(self.store.find_task_id(key))

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 30, what: str = "") -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"timed out waiting for {what}: {self.states()} {self.errors()}"
                )
            time.sleep(0.1)

    def errors(self) -> dict[str, str]:
        """Each task's last error, where it has one."""
        return {t["key"]: t["last_error"] for t in self.store.task_rows() if t["last_error"]}

    def wait_settled(self, timeout: float = 60) -> dict[str, str]:
        """The states once no task moves by itself; the errors go to the captured output, which
        a failing test shows."""
        self.wait_for(lambda: not set(self.states().values()) & ACTIVE, timeout, "settled")
        print(f"settled: {self.states()} errors: {self.errors()}")
        return self.states()

    def merged(self) -> list[str]:
        subjects = git(self.repo, "log", "--first-parent", "--format=%s", "cw/integration")
        return [
            s.split()[2].rstrip(":") for s in subjects.splitlines() if s.startswith("cw: merge")
        ]


@pytest.fixture
def district(
    make_repo: Callable[[str], Path], redis_url: str, database_url: str, processes: Processes
) -> Iterator[Callable[..., District]]:
    """``district(env={CW_*...}, extra={...})``: initialised, on the test Redis and the test
    database (``.cw/cw.db``, or a fresh PostgreSQL one), no workers yet."""
    stores: list[Store] = []

    def make(env: dict[str, str], extra: dict[str, str] | None = None) -> District:
        repo = make_repo("repo")
        base = {"CW_REPO": str(repo), "CW_BROKER_URL": redis_url, **database_env(database_url)}
        subprocess.run([*CW, "init"], cwd=repo, env={**os.environ, **base}, check=True,
                       capture_output=True)  # fmt: skip
        settings = Settings.load(env={**base, **FAST, **env})
        stores.append(Store.open(settings.db_url))
        return District(repo, settings, stores[-1], processes, dict(extra or {}))

    yield make
    for store in stores:
        store.close()


def fake_claude_district(
    district: Callable[..., District], tmp_path: Path, runs: list[Run], **env: str
) -> District:
    """A district (no workers yet) whose agents are the fake `claude` following ``runs``;
    its invocations are logged to ``tmp_path/invocations.jsonl``."""
    scenario = write_scenario(tmp_path / "scenario.json", runs)
    return district(
        {"CW_AGENT": "claude", "CW_CLAUDE_BINARY": str(FAKE_CLAUDE), **env},
        extra={"HOME": str(tmp_path / "home"), "FAKE_CLAUDE_SCENARIO": str(scenario),
               "FAKE_CLAUDE_LOG": str(tmp_path / "invocations.jsonl")},
    )  # fmt: skip


def fake_claude_running(district: Callable[..., District], tmp_path: Path) -> District:
    """A fake-claude district (scenario still empty) with one agent slot, a merge worker and
    a reconciler, all up: a test writes its scenario, then submits."""
    d = fake_claude_district(district, tmp_path, [])
    d.start_workers(agents=1)
    start_reconciler(d.processes, d.child_env(), "reconciler")
    d.wait_for_workers()
    return d


def real_claude_district(
    district: Callable[..., District], tmp_path: Path, api_url: str, **env: str
) -> District:
    """A district (no workers yet) whose agents are the real, pinned Claude Code CLI, offline,
    talking to the mock Messages API at ``api_url``."""
    d = district({"CW_AGENT": "claude", "CW_CLAUDE_BINARY": str(require_claude_cli()), **env})
    d.env, d.inherit = offline_env(tmp_path / "home", api_url), False
    return d


#: The question the real CLI asks in the answer tests.
DB_QUESTION = {"id": "db", "text": "SQLite or Postgres?", "options": ["sqlite", "postgres"]}


def real_claude_asking(
    district: Callable[..., District],
    tmp_path: Path,
    api: MockAnthropic,
    before_submit: Callable[[District], object] = lambda _d: None,
) -> District:
    """A real-CLI district with one agent worker whose task ``asks`` asked ``DB_QUESTION`` and
    now waits for the answer."""
    d = real_claude_district(district, tmp_path, api.url)
    api.queue(Turn([tool("StructuredOutput", status="questions", questions=[DB_QUESTION])]))
    d.start_workers(1)
    before_submit(d)
    d.submit({"asks": []})
    assert d.wait_settled(timeout=90) == {"asks": "waiting"}
    return d


@pytest.fixture
def hang() -> Iterator[str]:
    """A command that hangs, this test's own (``sleep`` for an odd, long time): found by its
    command line, and killed at the end if a failing test left it running. Ask for it first,
    so that it outlives the workers a test starts."""
    command = f"sleep {600 + secrets.randbelow(10**6) / 10**6:.6f}"
    yield command
    for proc in hanging(command):
        proc.kill()


def hanging(command: str) -> list[psutil.Process]:
    """The live processes running ``command`` (its shell's too)."""
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        alive = proc.info["status"] != psutil.STATUS_ZOMBIE
        if alive and command in " ".join(proc.info["cmdline"] or []):
            found.append(proc)
    return found
