"""Git commands run within ``runner.bounded``: a hook or filter that hangs is killed with git
(its whole process group) at the limit or at a stop, and says which command it was."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from cw.git import runner, worktrees
from cw.git.runner import GitStopped, GitTimedOut
from tests.conftest import git
from tests.integration.conftest import hanging


def hook(repo: Path, name: str, body: str) -> None:
    path = repo / ".git" / "hooks" / name
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)


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


def test_a_stop_ends_the_hanging_command_and_every_one_after_it(
    make_repo: Callable[[str], Path], hang: str
) -> None:
    repo = make_repo("repo")
    hook(repo, "post-checkout", hang)
    stop = threading.Event()

    def stop_once_hanging() -> None:
        deadline = time.monotonic() + 30
        while not hanging(hang) and time.monotonic() < deadline:
            time.sleep(0.05)
        stop.set()

    threading.Thread(target=stop_once_hanging, daemon=True).start()
    started = time.monotonic()
    with runner.bounded(120.0, stop):
        with pytest.raises(GitStopped, match="a stop request ended git checkout"):
            runner.run(repo, "checkout", "-q", "-b", "other")
        assert time.monotonic() - started < 60, "the stop did not wait for the limit"
        assert hanging(hang) == []
        with pytest.raises(GitStopped, match="came before git status"):
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
