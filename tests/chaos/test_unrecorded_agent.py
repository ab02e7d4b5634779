"""Fault 5: a worker killed after starting its agent but before recording the agent's process
group (its first heartbeat waits for the database). Nothing in the database names that agent,
yet it is stopped before another agent starts in its task: the reconciler stops it when it
runs on the agent's host, and otherwise the next attempt does. An agent that nothing on its
host stopped (its task went on elsewhere) is stopped by that host's agent worker."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

from cw import defaults
from cw.host.runmarks import AGENT_RUN_ENV, run_marker
from tests.chaos.reconciler import start_reconciler
from tests.conftest import git
from tests.factories import spec
from tests.integration.conftest import District

pytestmark = [pytest.mark.redis, pytest.mark.sqlite_only]

#: The first attempt's agent stays (holding the task's lock); an agent that finds the lock
#: taken (another agent still runs in the task) exits 3.
AGENT = """exec 9>>"$MARKS/task.lock"
flock -n 9 || exit 3
echo $$ > "$MARKS/agent-$CW_ATTEMPT.pid"
if [ "$CW_ATTEMPT" = 1 ]; then sleep 120; fi
echo done > t.txt
"""

#: Takes SQLite's write lock, says so, and keeps it until told to let go (a minute at most).
HOLD = """import pathlib, sqlite3, sys, time
db, marks = sys.argv[1], pathlib.Path(sys.argv[2])
connection = sqlite3.connect(db, isolation_level=None, timeout=30)
connection.execute("BEGIN IMMEDIATE")
(marks / "holding").touch()
deadline = time.monotonic() + 60
while not (marks / "release").exists() and time.monotonic() < deadline:
    time.sleep(0.05)
connection.execute("ROLLBACK")
"""

#: Once, right after the first task worktree is checked out (the worker's last step before its
#: agent starts), the database's write lock is taken: the agent's first heartbeat waits.
POST_CHECKOUT = """#!/bin/sh
case "$PWD" in */.cw/worktrees/*) ;; *) exit 0;; esac
[ -e "{marks}/held" ] && exit 0
touch "{marks}/held"
setsid {python} {hold} {db} {marks} </dev/null >/dev/null 2>&1 &
while [ ! -e "{marks}/holding" ]; do sleep 0.02; done
"""


def held_back_district(district: Callable[..., District], tmp_path: Path) -> District:
    marks = tmp_path / "marks"
    marks.mkdir()
    (tmp_path / "agent.sh").write_text(AGENT)
    d = district(
        # a heartbeat slower than the worker's steps: only the agent's first one meets the lock
        {"CW_AGENT_COMMAND": f"sh {tmp_path / 'agent.sh'}", "CW_HEARTBEAT": "2", "CW_LEASE": "6"},
        extra={"MARKS": str(marks)},
    )
    hold = tmp_path / "hold.py"
    hold.write_text(HOLD)
    db = d.settings.state_dir / defaults.DATABASE_FILE
    hook = d.repo / ".git" / "hooks" / "post-checkout"
    hook.write_text(POST_CHECKOUT.format(marks=marks, python=sys.executable, hold=hold, db=db))
    hook.chmod(0o755)
    return d


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.mark.parametrize("reconciler_host", ["the agent's host", "another host"])
def test_an_agent_whose_worker_died_before_recording_it_is_stopped_before_the_next_starts(
    district: Callable[..., District], tmp_path: Path, reconciler_host: str
) -> None:
    d = held_back_district(district, tmp_path)
    marks = tmp_path / "marks"
    doomed = d.start_worker("doomed", "agents")
    d.start_worker("merge", "merge")
    elsewhere = {"CW_HOST": "elsewhere"} if reconciler_host == "another host" else {}
    start_reconciler(d.processes, {**d.child_env(), **elsewhere}, "reconciler")
    d.submit({"t": []})
    d.wait_for((marks / "agent-1.pid").exists, what="the first agent")
    orphan = int((marks / "agent-1.pid").read_text())
    runs = d.task("t")["runs"]
    assert isinstance(runs, list)
    assert [run["pid"] for run in runs] == [None], "the agent is not recorded yet"

    os.killpg(doomed.pid, signal.SIGKILL)  # the worker and its pool; the agent lives on
    (marks / "release").touch()
    d.start_worker("survivor", "agents")

    assert d.wait_settled(timeout=60) == {"t": "done"}
    assert not alive(orphan), "the unrecorded agent was stopped"
    assert git(d.repo, "show", "cw/integration:t.txt") == "done"
    assert d.merged() == ["t"]
    who, said = (
        ("reconciler", "of a lost attempt")
        if reconciler_host == "the agent's host"
        else ("survivor", "left by a dead worker")
    )
    assert said in (d.processes.log_dir / f"{who}.log").read_text(), f"{who} stopped it"


def test_an_agent_no_running_attempt_owns_is_stopped_by_its_hosts_worker(
    district: Callable[..., District],
) -> None:
    """When the lost attempt was released on another host and the task went on there, nothing
    here would stop the agent: the agent worker's housekeeping does."""
    d = district({"CW_STALE_WORKTREE_SECONDS": "1"})  # housekeeping every second
    d.store.submit(spec({"t": []}))  # never dispatched: no attempt of it runs
    marker = run_marker(d.settings.state_dir, d.settings.hostname, d.store.find_task_id("t"), 1)
    env = {"PATH": os.environ["PATH"], AGENT_RUN_ENV: marker}
    stray = subprocess.Popen(["sleep", "60"], env=env, start_new_session=True)
    try:
        d.start_worker("agents", "agents")
        d.wait_for(lambda: stray.poll() is not None, timeout=30, what="the stray agent stopped")
        assert stray.returncode == -signal.SIGTERM
        log = d.processes.log_dir / "agents.log"
        said = f"stopped agent process group {stray.pid}"  # logged once the group is gone
        d.wait_for(lambda: said in log.read_text(), timeout=10, what="the worker to say so")
    finally:
        stray.kill()
        stray.wait()
