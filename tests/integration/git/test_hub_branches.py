"""A task branch between a host's clone and the hub: taken only forward, deleted only unmoved."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from cw import defaults
from cw.errors import GitError
from cw.git import branches, worktrees
from cw.git.hub import (
    delete_hub_branch,
    fetch_branch,
    hub_branches,
    push_branch,
    take_hub_branch,
)
from tests.conftest import git
from tests.integration.conftest import seeded_hub

BRANCH = "cw/task/1-t"


def clones(tmp_path: Path) -> tuple[Path, Path, Path]:
    """The hub and two clones of it; ``BRANCH`` on the hub at one commit of the first."""
    hub = seeded_hub(tmp_path)
    here, there = tmp_path / "here", tmp_path / "there"
    for clone in (here, there):
        git(tmp_path, "clone", "-q", str(hub), str(clone))
    commit(there, "one")
    git(there, "push", "-q", str(hub), f"HEAD:refs/heads/{BRANCH}")
    return hub, here, there


def commit(clone: Path, name: str) -> str:
    (clone / f"{name}.txt").write_text(name)
    git(clone, "add", "-A")
    git(clone, "commit", "-q", "-m", name)
    return git(clone, "rev-parse", "HEAD")


def test_a_host_without_the_branch_takes_the_hubs(tmp_path: Path) -> None:
    hub, here, there = clones(tmp_path)
    sha = git(there, "rev-parse", "HEAD")
    assert take_hub_branch(here, str(hub), BRANCH, here / "wt") == sha
    assert branches.branch_sha(here, BRANCH) == sha


def test_a_clean_worktree_moves_forward_to_the_hubs_newer_commits(tmp_path: Path) -> None:
    hub, here, there = clones(tmp_path)
    take_hub_branch(here, str(hub), BRANCH, here / "wt")
    worktrees.add_worktree(here, here / "wt", BRANCH, "unused")
    newer = commit(there, "two")
    git(there, "push", "-q", str(hub), f"HEAD:refs/heads/{BRANCH}")
    take_hub_branch(here, str(hub), BRANCH, here / "wt")
    assert branches.branch_sha(here, BRANCH) == newer
    assert (here / "wt" / "two.txt").read_text() == "two", "the worktree's files moved too"


def test_local_commits_the_hub_lacks_are_never_dropped_nor_pushed_over_newer_work(
    tmp_path: Path,
) -> None:
    """Both moved: the hub's commits come from a later attempt on another host, this host's
    from an earlier one it superseded; those are kept aside, the newer work goes on."""
    hub, here, there = clones(tmp_path)
    take_hub_branch(here, str(hub), BRANCH, here / "wt")
    worktrees.add_worktree(here, here / "wt", BRANCH, "unused")
    mine = commit(here / "wt", "mine")
    assert take_hub_branch(here, str(hub), BRANCH, here / "wt") != mine
    assert branches.branch_sha(here, BRANCH) == mine, "ahead of the hub: stays"
    theirs = commit(there, "theirs")
    git(there, "push", "-q", "--force", str(hub), f"HEAD:refs/heads/{BRANCH}")
    take_hub_branch(here, str(hub), BRANCH, here / "wt")
    assert branches.branch_sha(here, BRANCH) == theirs, "the newer work goes on here"
    assert (here / "wt" / "theirs.txt").read_text() == "theirs"
    assert not (here / "wt" / "mine.txt").exists()
    aside = f"cw/stale/{BRANCH.removeprefix('cw/task/')}-{mine[:10]}"
    assert branches.branch_sha(here, aside) == mine, "this host's commit kept"


def test_uncommitted_work_of_a_superseded_attempt_is_committed_aside(tmp_path: Path) -> None:
    """A worker killed mid-run left files; another host's later attempt moved the hub on."""
    hub, here, there = clones(tmp_path)
    take_hub_branch(here, str(hub), BRANCH, here / "wt")
    worktrees.add_worktree(here, here / "wt", BRANCH, "unused")
    (here / "wt" / "draft.txt").write_text("draft")
    two = commit(there, "two")
    git(there, "push", "-q", str(hub), f"HEAD:refs/heads/{BRANCH}")
    take_hub_branch(here, str(hub), BRANCH, here / "wt")
    assert branches.branch_sha(here, BRANCH) == two
    assert not worktrees.is_dirty(here / "wt") and not (here / "wt" / "draft.txt").exists()
    (aside,) = branches.list_branches(here, "cw/stale/")
    assert git(here, "show", f"{aside}:draft.txt") == "draft", "the draft kept"


def test_the_hubs_branch_is_deleted_only_where_it_was_seen(tmp_path: Path) -> None:
    hub, here, there = clones(tmp_path)
    seen = hub_branches(here, str(hub), "cw/task/")
    assert seen == {BRANCH: git(there, "rev-parse", "HEAD")}
    commit(there, "two")
    git(there, "push", "-q", str(hub), f"HEAD:refs/heads/{BRANCH}")
    assert not delete_hub_branch(here, str(hub), BRANCH, seen[BRANCH]), "it moved"
    assert hub_branches(here, str(hub), "cw/task/") != {}
    now = hub_branches(here, str(hub), "cw/task/")[BRANCH]
    assert delete_hub_branch(here, str(hub), BRANCH, now)
    assert hub_branches(here, str(hub), "cw/task/") == {}


def test_a_branch_another_gc_deleted_first_is_no_error(tmp_path: Path) -> None:
    hub, here, there = clones(tmp_path)
    sha = hub_branches(here, str(hub), "cw/task/")[BRANCH]
    assert delete_hub_branch(there, str(hub), BRANCH, sha)
    assert not delete_hub_branch(here, str(hub), BRANCH, sha)


def left_lock(hub: Path, age: float) -> Path:
    """The ref lock a receive-pack killed mid-push leaves on the hub, ``age`` seconds old."""
    lock = hub / "refs" / "heads" / f"{BRANCH}.lock"
    lock.write_text("")
    then = time.time() - age
    os.utime(lock, (then, then))
    return lock


def test_a_ref_lock_a_killed_push_left_on_the_hub_is_removed(tmp_path: Path) -> None:
    hub, _, there = clones(tmp_path)
    newer = commit(there, "two")
    lock = left_lock(hub, age=60)
    push_branch(there, str(hub), newer, BRANCH)
    assert hub_branches(there, str(hub), "cw/task/")[BRANCH] == newer
    assert not lock.exists()


def test_a_fresh_ref_lock_on_the_hub_is_left_to_its_push(tmp_path: Path) -> None:
    hub, _, there = clones(tmp_path)
    newer = commit(there, "two")
    lock = left_lock(hub, age=0)
    with pytest.raises(GitError, match="cannot lock ref"):
        push_branch(there, str(hub), newer, BRANCH)
    assert lock.exists(), "a push may be running: its lock stays"


def test_a_hub_lock_held_open_by_a_live_process_stays(tmp_path: Path) -> None:
    hub, _, there = clones(tmp_path)
    newer = commit(there, "two")
    lock = left_lock(hub, age=60)
    with lock.open("a"), pytest.raises(GitError, match="cannot lock ref"):
        push_branch(there, str(hub), newer, BRANCH)
    assert lock.exists()


def test_a_hub_that_never_answers_is_given_up_on_after_the_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A hung network is cw's machinery failing (tried again later), never a slot held for ever."""
    _hub, clone, _other = clones(tmp_path)
    ssh = tmp_path / "hanging-ssh"
    ssh.write_text("#!/bin/sh\nexec sleep 117.3\n")  # connects, then never says a word
    ssh.chmod(0o755)
    monkeypatch.setenv("GIT_SSH_COMMAND", str(ssh))
    monkeypatch.setattr(defaults, "HUB_TIMEOUT_SECONDS", 1.0)
    away = "ssh://hub.invalid/repo.git"
    for talk in (
        lambda: fetch_branch(clone, away, "cw/task/1-a", "refs/cw-hub/heads/cw/task/1-a"),
        lambda: push_branch(clone, away, "HEAD", "cw/task/1-a"),
        lambda: hub_branches(clone, away, "cw/task/"),
    ):
        start = time.monotonic()
        with pytest.raises(GitError, match="the hub did not answer in 1 s"):
            talk()
        assert time.monotonic() - start < 20
    assert (
        "sleep 120"
        not in subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    )
