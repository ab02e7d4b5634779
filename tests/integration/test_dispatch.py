"""Real Redis, real Celery worker processes (`celery -A workers`), real git, real SQLite."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from cw import worktrees
from cw.celeryapp import make_app
from cw.dispatch import dispatch_ready
from cw.settings import Settings
from cw.store import Store
from tests.conftest import CW, Processes, git
from tests.factories import spec

pytestmark = pytest.mark.redis


@dataclass
class District:
    repo: Path
    settings: Settings
    store: Store
    processes: Processes

    def start_worker(self, name: str, *args: str) -> psutil.Process:
        argv = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "workers",
            "worker",
            "-P",
            "prefork",
            "--without-gossip",
            "--without-mingle",
            "-n",
            f"{name}@%h",
            *args,
        ]
        env = {**os.environ, **self.settings.child_env()}
        return psutil.Process(self.processes.start(argv, self.repo, env, name).pid)

    def submit(self, edges: dict[str, list[str]]) -> None:
        self.store.submit(spec(edges))
        dispatch_ready(self.store, make_app(self.settings))

    def states(self) -> dict[str, str]:
        return {t["key"]: t["state"].value for t in self.store.task_rows()}

    def wait_settled(self, timeout: float = 60) -> dict[str, str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            states = self.states()
            if not set(states.values()) & {"ready", "queued", "running", "merging"}:
                return states
            time.sleep(0.2)
        raise AssertionError(f"not settled after {timeout}s: {self.states()}")


@pytest.fixture
def district(
    make_repo: Callable[[str], Path], redis_url: str, processes: Processes
) -> Callable[[str], District]:
    def make(agent_script: str) -> District:
        repo = make_repo("repo")
        env = {"CW_REPO": str(repo), "CW_BROKER_URL": redis_url}
        subprocess.run([*CW, "init"], cwd=repo, env={**os.environ, **env}, check=True)
        (repo / "agent.sh").write_text(agent_script)
        settings = Settings.load(
            env={
                **env,
                "CW_AGENT_COMMAND": f"sh {repo / 'agent.sh'}",
                "CW_LEASE": "3",
                "CW_HEARTBEAT": "0.5",
                "CW_AGENT_KILL_GRACE": "2",
            }
        )
        store = Store.open(settings.db_url)
        d = District(repo, settings, store, processes)
        d.start_worker("agents", "-Q", "agents", "-c", "2")
        d.start_worker("merge", "-Q", "merge", "-c", "1")
        return d

    return make


def test_failed_agent_fails_its_task_and_blocks_what_depends_on_it(
    district: Callable[[str], District],
) -> None:
    d = district('[ "$CW_TASK_KEY" = bad ] && { echo "it broke" >&2; exit 3; }; echo ok > ok.txt\n')
    d.submit({"bad": [], "after": ["bad"], "free": []})
    assert d.wait_settled() == {"bad": "failed", "after": "blocked", "free": "done"}
    detail = d.store.task_detail(d.store.find_task_id("bad"))
    assert "exit code 3: it broke" in detail["last_error"]


def test_conflicting_edits_mark_the_second_task_conflict_with_its_files(
    district: Callable[[str], District],
) -> None:
    d = district('echo "$CW_TASK_KEY was here" > README.md\n')
    d.submit({"one": [], "two": []})
    states = d.wait_settled()
    assert sorted(states.values()) == ["conflict", "done"]
    loser = next(k for k, v in states.items() if v == "conflict")
    winner = next(k for k, v in states.items() if v == "done")
    assert d.store.task_detail(d.store.find_task_id(loser))["conflict_files"] == ["README.md"]
    assert git(d.repo, "show", "cw/integration:README.md") == f"{winner} was here"
    assert not worktrees.is_dirty(d.settings.integration_worktree)


def test_killed_pool_process_loses_nothing_and_the_task_merges_once(
    district: Callable[[str], District],
) -> None:
    d = district(
        'echo "attempt $CW_ATTEMPT" >> runs.txt\n'
        '[ -e "$CW_WORKTREE/../killed-once" ] || sleep 30\n'
        "echo done > result.txt\n"
    )
    d.submit({"long": []})
    agent_pid = _wait_for_agent_pid(d)
    pool_child = psutil.Process(agent_pid).parent()
    assert pool_child is not None
    (d.settings.worktree_dir / "killed-once").touch()
    os.kill(pool_child.pid, signal.SIGKILL)
    assert d.wait_settled(timeout=60) == {"long": "done"}
    assert not psutil.pid_exists(agent_pid) or psutil.Process(agent_pid).status() == "zombie"
    merges = git(d.repo, "log", "--first-parent", "--format=%s", "cw/integration")
    assert merges.count("cw: merge long") == 1
    assert git(d.repo, "show", "cw/integration:result.txt") == "done"
    kinds = [e["kind"] for e in d.store.events(d.store.find_task_id("long"))]
    assert "attempt.taken_over" in kinds


def _wait_for_agent_pid(d: District, timeout: float = 30) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for run in d.store.task_detail(d.store.find_task_id("long"))["runs"]:
            if run["pid"]:
                return int(run["pid"])
        time.sleep(0.1)
    raise AssertionError("the agent never started")
