"""Worktrees survive a SIGKILL at any instant: half-made ones are rebuilt, stale git locks go."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from cw.git import worktrees
from cw.git.runner import git_common_dir
from cw.git.worktrees import add_worktree, commit_all, remove_worktree

BRANCH = "cw/task/1-a"


def git(cwd: Path, *args: str) -> str:
    command = ["git", "-c", "user.name=Test", "-c", "user.email=test@example.com", *args]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, check=True).stdout


def slow_checkout_repo(tmp_path: Path) -> Path:
    """A repository whose ``*.slow`` files take seconds to check out (a smudge filter)."""
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "--quiet", "--initial-branch=main")
    (repo / ".gitattributes").write_text("*.slow filter=slow\n")
    (repo / "a.slow").write_text("slow\n")
    (repo / "b.txt").write_text("b\n")
    git(repo, "add", "-A")
    git(repo, "commit", "--quiet", "-m", "first")
    git(repo, "config", "filter.slow.clean", "cat")
    git(repo, "config", "filter.slow.smudge", "sleep 30; cat")
    return repo


def in_own_group(code: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", code], start_new_session=True)


def kill_when(proc: subprocess.Popen[bytes], ready: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 30
    while not ready():
        assert proc.poll() is None and time.monotonic() < deadline, "never got there"
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def age(path: Path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then))


def test_a_worktree_add_killed_mid_checkout_is_rebuilt_and_usable(tmp_path: Path) -> None:
    repo = slow_checkout_repo(tmp_path)
    path, base = tmp_path / "worktrees" / "1-a", git(repo, "rev-parse", "main").strip()
    lock = git_common_dir(repo) / "worktrees" / "1-a" / "index.lock"
    proc = in_own_group(
        f"from pathlib import Path; from cw.git.worktrees import add_worktree; "
        f"add_worktree(Path({str(repo)!r}), Path({str(path)!r}), {BRANCH!r}, {base!r})"
    )
    kill_when(proc, lock.exists)  # inside the checkout: the smudge filter is sleeping
    assert "locked initializing" in git(repo, "worktree", "list", "--porcelain")
    assert worktrees.half_made_worktrees(repo, tmp_path / "worktrees") == [path]
    age(lock, 10)
    git(repo, "config", "filter.slow.smudge", "cat")

    add_worktree(repo, path, BRANCH, base)

    assert (path / "a.slow").read_text() == "slow\n" and (path / "b.txt").exists()
    assert "locked" not in git(repo, "worktree", "list", "--porcelain")
    assert not lock.exists()
    (path / "work.txt").write_text("work\n")
    assert commit_all(path, "work") is not None
    assert worktrees.half_made_worktrees(repo, tmp_path / "worktrees") == []


def test_a_stale_index_lock_is_removed_and_one_held_open_is_kept(tmp_path: Path) -> None:
    repo = slow_checkout_repo(tmp_path)
    git(repo, "config", "filter.slow.smudge", "cat")
    path, base = tmp_path / "worktrees" / "1-a", git(repo, "rev-parse", "main").strip()
    add_worktree(repo, path, BRANCH, base)
    lock = git_common_dir(repo) / "worktrees" / "1-a" / "index.lock"
    lock.touch()
    age(lock, 10)
    hold = f"import time; f = open({str(lock)!r}); print(1, flush=True); time.sleep(60)"
    holder = subprocess.Popen([sys.executable, "-c", hold], stdout=subprocess.PIPE)
    try:
        assert holder.stdout is not None and holder.stdout.readline(), "the holder has it open"
        add_worktree(repo, path, BRANCH, base)
        assert lock.exists(), "a lock a live process holds is never removed"
    finally:
        holder.kill()
        holder.communicate()
    add_worktree(repo, path, BRANCH, base)
    assert not lock.exists(), "the holder died: the lock is stale"
    (path / "work.txt").write_text("work\n")
    assert commit_all(path, "work") is not None


def test_a_fresh_lock_is_left_to_the_git_that_is_about_to_rename_it(tmp_path: Path) -> None:
    repo = slow_checkout_repo(tmp_path)
    git(repo, "config", "filter.slow.smudge", "cat")
    path, base = tmp_path / "worktrees" / "1-a", git(repo, "rev-parse", "main").strip()
    add_worktree(repo, path, BRANCH, base)
    lock = git_common_dir(repo) / "refs" / "heads" / f"{BRANCH}.lock"
    lock.touch()
    add_worktree(repo, path, BRANCH, base)
    assert lock.exists()
    age(lock, 10)
    add_worktree(repo, path, BRANCH, base)
    assert not lock.exists()


def test_a_removal_killed_at_any_instant_never_leaves_a_half_deleted_worktree(
    tmp_path: Path,
) -> None:
    repo = slow_checkout_repo(tmp_path)
    git(repo, "config", "filter.slow.smudge", "cat")
    path, base = tmp_path / "worktrees" / "1-a", git(repo, "rev-parse", "main").strip()
    add_worktree(repo, path, BRANCH, base)
    for n in range(400):
        (path / f"f{n}.txt").write_text(f"{n}\n")
    commit_all(path, "many files")
    for delay in (0.05, 0.1, 0.15, 0.2, 0.3):
        proc = in_own_group(
            f"from pathlib import Path; from cw.git.worktrees import remove_worktree; "
            f"remove_worktree(Path({str(repo)!r}), Path({str(path)!r}))"
        )
        time.sleep(delay)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        if path.exists():
            assert git(path, "status", "--porcelain") == "", "whole, never half-deleted"
        add_worktree(repo, path, BRANCH, base)
        assert git(path, "status", "--porcelain") == ""
        assert worktrees.trash_entries(path.parent) == []
    remove_worktree(repo, path)
    assert not path.exists() and worktrees.trash_entries(path.parent) == []
