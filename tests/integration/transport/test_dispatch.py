"""Real Redis, real Celery worker processes (`celery -A workers`), real git, real SQLite."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

from tests.conftest import git
from tests.integration.conftest import District

pytestmark = pytest.mark.redis


@pytest.fixture
def command_district(district: Callable[..., District], tmp_path: Path) -> Callable[..., District]:
    """A district whose agents run ``agent_script`` with the command adapter, workers up."""

    def make(agent_script: str, **env: str) -> District:
        script = tmp_path / "agent.sh"
        script.write_text(agent_script)
        d = district({"CW_AGENT_COMMAND": f"sh {script}", **env})
        d.start_workers()
        return d

    return make


def test_failed_agent_fails_its_task_and_blocks_what_depends_on_it(
    command_district: Callable[..., District],
) -> None:
    d = command_district(
        '[ "$CW_TASK_KEY" = bad ] && { echo "it broke" >&2; exit 3; }; echo ok > ok.txt\n'
    )
    d.submit({"bad": [], "after": ["bad"], "free": []})
    assert d.wait_settled() == {"bad": "failed", "after": "blocked", "free": "done"}
    detail = d.store.task_detail(d.store.find_task_id("bad"))
    assert "exit code 3: it broke" in detail["last_error"]


def test_with_bouncing_off_a_conflict_stops_at_conflict_with_its_files(
    command_district: Callable[..., District],
) -> None:
    d = command_district('echo "$CW_TASK_KEY was here" > README.md\n', CW_MAX_BOUNCES="0")
    d.submit({"one": [], "two": []})
    states = d.wait_settled()
    assert sorted(states.values()) == ["conflict", "done"]
    loser = next(k for k, v in states.items() if v == "conflict")
    winner = next(k for k, v in states.items() if v == "done")
    assert d.store.task_detail(d.store.find_task_id(loser))["conflict_files"] == ["README.md"]
    assert git(d.repo, "show", "cw/integration:README.md") == f"{winner} was here"
    assert not d.settings.integration_worktree.exists(), "merges without verify need no checkout"


def test_killed_pool_process_loses_nothing_and_the_task_merges_once(
    command_district: Callable[..., District],
) -> None:
    d = command_district(
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
    runs = d.task("long")["runs"]
    assert isinstance(runs, list)
    # The redelivered message took over as the next attempt: the dead one is fenced out.
    assert [(r["attempt"], r["state"]) for r in runs] == [(1, "lost"), (2, "succeeded")]


def _wait_for_agent_pid(d: District, timeout: float = 30) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for run in d.store.task_detail(d.store.find_task_id("long"))["runs"]:
            if run["pid"]:
                return int(run["pid"])
        time.sleep(0.1)
    raise AssertionError("the agent never started")


def test_agents_run_nicer_than_the_merge_worker_and_their_agents_inherit_it(
    command_district: Callable[..., District],
) -> None:
    d = command_district("ps -o ni= -p $$ > niceness\ngit add niceness\ngit commit -qm n\n")
    d.wait_for_workers()
    base = os.getpriority(os.PRIO_PROCESS, 0)
    niced = min(base + 10, 19)
    agents, merge = (psutil.Process(p.pid) for p in d.processes.started[:2])  # start_workers
    assert agents.nice() == niced and all(c.nice() == niced for c in agents.children())
    assert merge.nice() == base, "the merge worker keeps its priority"

    d.submit({"a": []})
    assert d.wait_settled() == {"a": "done"}
    assert int(git(d.repo, "show", "cw/integration:niceness")) == niced
