"""Git commands run within ``runner.bounded``: a hook or filter that hangs is killed with git
(its whole process group) at the limit, at a stop or at a shutdown, and says which command it
was. A wait for cw's lock on the repository, which another process's hanging git step holds,
ends the same ways within a bound, and lasts until the lock is free outside one."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

from cw.defaults import GIT_LOCK_FILE
from cw.git import runner, worktrees
from cw.git.runner import GitInterrupted, GitStopped, GitTimedOut
from cw.host import locks
from tests.conftest import Processes, git
from tests.integration.conftest import hanging


def hook(repo: Path, name: str, body: str) -> None:
    path = repo / ".git" / "hooks" / name
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)


def set_once_hanging(hang: str, event: threading.Event) -> None:
    """Sets ``event`` once ``hang`` runs (a stop or a shutdown while git waits for it)."""
    deadline = time.monotonic() + 30
    while not hanging(hang) and time.monotonic() < deadline:
        time.sleep(0.05)
    event.set()


def test_a_checkout_whose_hook_hangs_is_killed_at_the_limit_and_repaired_after(
    make_repo: Callable[[str], Path], hang: str
) -> None:
    repo = make_repo("repo")
    hook(repo, "post-checkout", hang)
    path, base = repo.parent / "wt", git(repo, "rev-parse", "HEAD")
    started = time.monotonic()
    with runner.bounded(1.0), pytest.raises(GitTimedOut) as raised:
        worktrees.add_worktree(repo, path, "cw/task/1-a", base)
    assert time.monotonic() - started < 20
    assert str(raised.value).startswith("git worktree add ran longer than 1 s (git_timeout)")
    assert hanging(hang) == [], "the hook died with git"

    (repo / ".git" / "hooks" / "post-checkout").unlink()
    worktrees.add_worktree(repo, path, "cw/task/1-a", base)  # no limit: as everywhere else
    assert (path / "README.md").read_text() == "# sample\n"


#: What ends a bound's git commands and waits at once: a person's stop, the worker's shutdown.
ENDS = pytest.mark.parametrize(("end", "raised", "why"), [
    ("stop", GitStopped, "a stop request"),
    ("interrupt", GitInterrupted, "the worker's shutdown"),
])  # fmt: skip


@ENDS
def test_a_stop_or_a_shutdown_ends_the_hanging_command_and_every_one_after_it(
    make_repo: Callable[[str], Path], hang: str, end: str, raised: type[Exception], why: str
) -> None:
    """The worker's shutdown is not a person's stop: its attempt is interrupted (the restart
    goes on with it), not stopped; a stop wins over it."""
    repo = make_repo("repo")
    hook(repo, "post-checkout", hang)
    events = {"stop": threading.Event(), "interrupt": threading.Event()}
    threading.Thread(target=set_once_hanging, args=(hang, events[end]), daemon=True).start()
    started = time.monotonic()
    with runner.bounded(120.0, **events):
        with pytest.raises(raised, match=f"{why} ended git checkout"):
            runner.run(repo, "checkout", "-q", "-b", "other")
        assert time.monotonic() - started < 60, "it did not wait for the limit"
        assert hanging(hang) == []
        with pytest.raises(raised, match=f"{why} came before git status"):
            runner.run(repo, "status")
        events["stop"].set()
        with pytest.raises(GitStopped, match="a stop request came before git status"):
            runner.run(repo, "status")
    assert runner.run(repo, "rev-parse", "--abbrev-ref", "HEAD") == "other"


def test_a_command_with_a_limit_of_its_own_keeps_it_and_reports_the_timeout(
    make_repo: Callable[[str], Path], hang: str
) -> None:
    """The hub's talks give their own limit, and word a timeout themselves from stderr."""
    repo = make_repo("repo")
    hook(repo, "post-checkout", hang)
    with runner.bounded(120.0):
        result = runner.call(repo, "checkout", "-q", "-b", "other", timeout=1.0)
    assert result.status != 0
    assert result.err == "Timeout: git checkout did not complete in 1 s"
    assert hanging(hang) == []


#: Another attempt's checkout, in a process of its own: it holds cw's lock while git hangs.
HOLDER = """
import sys
from pathlib import Path
from cw.git import worktrees
repo = Path(sys.argv[1])
worktrees.add_worktree(repo, repo.parent / "held", "cw/task/99-held", sys.argv[2])
"""


def hanging_checkout_env(hooks: Path, hang: str) -> dict[str, str]:
    """The environment of a process whose git runs ``hang`` as its post-checkout hook (its
    own: git in this process runs none)."""
    hooks.mkdir()
    hook_file = hooks / "post-checkout"
    hook_file.write_text(f"#!/bin/sh\n{hang}\n")
    hook_file.chmod(0o755)
    return {**os.environ, "GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": "core.hooksPath",
            "GIT_CONFIG_VALUE_0": str(hooks)}  # fmt: skip


def hold_repo_lock(processes: Processes, repo: Path, hang: str) -> psutil.Process:
    """A process whose `git worktree add` hangs in a post-checkout hook (its own: git in this
    process runs none) while it holds cw's lock on ``repo``; returned once it hangs."""
    env = hanging_checkout_env(repo.parent / "holder-hooks", hang)
    base = git(repo, "rev-parse", "HEAD")
    proc = processes.start([sys.executable, "-c", HOLDER, str(repo), base], repo, env, "holder")
    deadline = time.monotonic() + 30
    while not hanging(hang):
        assert proc.poll() is None, (processes.log_dir / "holder.log").read_text()
        assert time.monotonic() < deadline, "the holder's checkout never hung"
        time.sleep(0.05)
    return psutil.Process(proc.pid)


def let_go(holder: psutil.Process) -> None:
    """The holder dies (its git and hook with it: they share its process group)."""
    os.killpg(holder.pid, signal.SIGKILL)
    holder.wait(timeout=10)


def test_a_wait_for_the_lock_within_a_bound_gives_up_at_its_limit_naming_the_holder(
    make_repo: Callable[[str], Path], hang: str, processes: Processes
) -> None:
    repo = make_repo("repo")
    holder = hold_repo_lock(processes, repo, hang)
    path, base = repo.parent / "wt", git(repo, "rev-parse", "HEAD")
    started = time.monotonic()
    with runner.bounded(1.0), pytest.raises(GitTimedOut) as raised:
        worktrees.add_worktree(repo, path, "cw/task/1-a", base)
    assert time.monotonic() - started < 20, "not the holder's hang"
    said = str(raised.value)
    assert said.startswith("waited longer than 1 s (git_timeout) for cw's lock on the repository")
    assert f"({runner.git_common_dir(repo) / GIT_LOCK_FILE})" in said
    assert f"held by pid {holder.pid} (" in said

    # Outside a bound (the merge worker, `cw gc`) the wait lasts until the holder lets go.
    waiter = threading.Thread(target=worktrees.add_worktree, args=(repo, path, "cw/task/1-a", base))
    waiter.start()
    waiter.join(timeout=2)
    assert waiter.is_alive(), "it waits for the lock"
    let_go(holder)
    waiter.join(timeout=30)
    assert not waiter.is_alive()
    assert (path / "README.md").read_text() == "# sample\n"


@ENDS
def test_a_stop_or_a_shutdown_ends_the_wait_for_the_lock(
    make_repo: Callable[[str], Path],
    hang: str,
    processes: Processes,
    end: str,
    raised: type[Exception],
    why: str,
) -> None:
    repo = make_repo("repo")
    hold_repo_lock(processes, repo, hang)
    events = {"stop": threading.Event(), "interrupt": threading.Event()}
    path, base = repo.parent / "wt", git(repo, "rev-parse", "HEAD")
    threading.Timer(1.0, events[end].set).start()
    started = time.monotonic()
    with runner.bounded(120.0, **events), pytest.raises(raised) as ended:
        worktrees.add_worktree(repo, path, "cw/task/1-a", base)
    assert time.monotonic() - started < 60, "the wait went on after the event"
    assert str(ended.value).startswith(f"{why} ended the wait for cw's lock on the repository")


BOUNDED_CHECKOUT = """
import sys
from pathlib import Path
from cw.git import runner, worktrees
repo = Path(sys.argv[1])
with runner.bounded(600):
    worktrees.add_worktree(repo, repo.parent / "bounded", "cw/task/98-bounded", sys.argv[2])
"""


def test_a_bounded_git_step_ends_with_the_process_that_started_it(
    hang: str, tmp_path: Path, processes: Processes
) -> None:
    """git within a bound runs in a session of its own (so its filters and hooks die with it);
    a worker killed alone (`cw server`'s stop kills the worker's process group) must not leave
    it running, holding the worktree's index.lock, until its 600 s are up."""
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    git(repo, "commit", "-q", "--allow-empty", "-m", "first")
    env = hanging_checkout_env(tmp_path / "hooks", hang)
    base = git(repo, "rev-parse", "HEAD")
    argv = [sys.executable, "-c", BOUNDED_CHECKOUT, str(repo), base]
    proc = processes.start(argv, repo, env, "bounded")
    deadline = time.monotonic() + 30
    while not hanging(hang):
        assert proc.poll() is None, (processes.log_dir / "bounded.log").read_text()
        assert time.monotonic() < deadline, "the checkout never hung"
        time.sleep(0.05)
    (step,) = [p for p in psutil.Process(proc.pid).children() if p.name() == "git"]

    os.kill(proc.pid, signal.SIGKILL)  # the worker alone, as a kill of its group would

    gone, alive = psutil.wait_procs([step], timeout=10)
    assert gone and not alive, "git outlived the process that ran it"


def test_a_wait_for_a_lock_passed_from_holder_to_holder_outlasts_the_limit(
    tmp_path: Path, processes: Processes
) -> None:
    """Checkouts and clean-ups queued for the lock: the wait of an attempt behind them is no
    git step that hangs, and gives up only when one holder keeps the lock the whole limit."""
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    lock = runner.git_common_dir(repo) / GIT_LOCK_FILE
    lock.touch()
    for n in range(3):  # the first holds it; the others wait in the kernel, handed it in turn
        processes.start(["flock", str(lock), "sleep", "0.9"], repo, dict(os.environ), f"h{n}")
        deadline = time.monotonic() + 10
        while n == 0 and locks.holder(lock) is None:
            assert time.monotonic() < deadline, "the first holder never took the lock"
            time.sleep(0.02)
    started = time.monotonic()

    with runner.bounded(1.5), runner.repo_lock(repo):
        waited = time.monotonic() - started

    assert waited > 1.5, "it waited past the limit, the lock moving on meanwhile"
