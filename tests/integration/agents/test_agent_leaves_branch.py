"""An agent that leaves its task branch (checks out a branch of its own, or a detached HEAD)
and commits there: its work is merged all the same, never reported "done (no changes)"."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from cw.errors import AgentError
from cw.git.branches import back_on_branch
from cw.git.worktrees import commit_all
from cw.transport.celeryapp import make_app
from cw.transport.dispatch import dispatch_ready
from tests.factories import spec
from tests.integration.conftest import District, git

pytestmark = pytest.mark.redis

AGENT = """\
case "$CW_TASK_KEY" in
  side) git checkout -q -b "side-$CW_TASK_KEY" ;;
  detached) git checkout -q --detach ;;
  elsewhere) git checkout -q --orphan unrelated ;;
  onto) git checkout -q cw/integration ;;
  orphaned) b=$(git symbolic-ref --short HEAD); git checkout -q --detach; git branch -q -D "$b" ;;
  later) sleep 2 ;;
  vanish) echo "$CW_TASK_KEY" > "$CW_TASK_KEY.txt"; git add -A; git commit -q -m mine
          rm -rf "$PWD"; exit 0 ;;
  nested) git init -q vendor/lib; echo n > vendor/lib/n.txt; git -C vendor/lib add n.txt
          git -C vendor/lib -c user.name=a -c user.email=a@b commit -q -m mine
          echo top > top.txt; exit 0 ;;
  linked) git clone -q "$(git rev-parse --git-common-dir)" vendor/copy 2>/dev/null
          echo top > top.txt; git add -A 2>/dev/null; git commit -q -m "vendored"; exit 0 ;;
esac
echo "$CW_TASK_KEY" > "$CW_TASK_KEY.txt"
git add -A && git commit -q -m "work of $CW_TASK_KEY"
echo "left uncommitted" > "$CW_TASK_KEY.extra"
"""


def one_commit_repo(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    git(repo, "commit", "-q", "--allow-empty", "-m", "start")
    return repo


@pytest.fixture
def wanderer(district: Callable[..., District], tmp_path: Path) -> District:
    (tmp_path / "agent.sh").write_text(AGENT)
    d = district({"CW_AGENT_COMMAND": f"sh {tmp_path / 'agent.sh'}"})
    d.start_workers()
    return d


def test_work_committed_off_the_task_branch_is_merged(wanderer: District) -> None:
    wanderer.submit({"side": [], "detached": []})
    assert wanderer.wait_settled() == {"side": "done", "detached": "done"}
    files = git(wanderer.repo, "ls-tree", "--name-only", "cw/integration").split()
    assert {"side.txt", "side.extra", "detached.txt", "detached.extra"} <= set(files)
    for key in ("side", "detached"):
        assert wanderer.task(key)["no_changes"] is False


def test_a_first_attempt_whose_agent_deleted_its_branch_is_merged_from_its_start(
    wanderer: District,
) -> None:
    """On a first attempt the branch's start was not yet in the workspace it was given."""
    wanderer.submit({"orphaned": []})
    assert wanderer.wait_settled() == {"orphaned": "done"}
    files = git(wanderer.repo, "ls-tree", "--name-only", "cw/integration").split()
    assert "orphaned.txt" in files


def test_a_head_that_does_not_build_on_the_task_branch_fails_the_task_saying_so(
    wanderer: District,
) -> None:
    wanderer.submit({"elsewhere": []})
    assert wanderer.wait_settled() == {"elsewhere": "failed"}
    error = str(wanderer.task("elsewhere")["last_error"])
    assert error.startswith("the agent left branch cw/task/")
    assert "for branch unrelated at " in error and "none of it is merged" in error


def test_a_deleted_task_branch_comes_back_only_on_work_that_builds_on_its_start(
    tmp_path: Path,
) -> None:
    repo = one_commit_repo(tmp_path)
    base = git(repo, "rev-parse", "HEAD")
    worktree = tmp_path / "wt"
    git(repo, "worktree", "add", "-q", "-b", "task", str(worktree), base)
    git(worktree, "checkout", "-q", "--detach")
    git(worktree, "branch", "-q", "-D", "task")  # the agent deleted it
    git(worktree, "commit", "-q", "--allow-empty", "-m", "work")
    assert back_on_branch(worktree, "task", base, "cw/integration") is None
    assert git(worktree, "rev-parse", "task") == git(worktree, "rev-parse", "HEAD") != base

    git(worktree, "checkout", "-q", "--orphan", "elsewhere")
    git(worktree, "commit", "-q", "--allow-empty", "-m", "unrelated")
    git(worktree, "branch", "-q", "-D", "task")
    error = back_on_branch(worktree, "task", base, "cw/integration")
    assert error is not None and "does not build on it" in error
    assert f"in {worktree}, `git checkout task`" in error


def test_an_agent_on_the_integration_branch_fails_and_others_work_stays(
    wanderer: District,
) -> None:
    """An agent that checks out cw/integration and commits there while others merge: its
    branch never moves to integration's tip, whose stale index would have been committed over
    the others' merged work (deleting it)."""
    wanderer.submit({"onto": [], "later": []})
    assert wanderer.wait_settled() == {"onto": "failed", "later": "done"}
    error = str(wanderer.task("onto")["last_error"])
    assert "for branch cw/integration, a branch cw keeps: none of it is merged" in error
    files = git(wanderer.repo, "ls-tree", "--name-only", "cw/integration").split()
    assert "later.txt" in files


def test_a_branch_holding_others_commits_is_not_taken_as_the_agents_work(
    tmp_path: Path,
) -> None:
    """Another branch that builds on the task branch, with commits not the agent's (a
    person's, another task's): the task branch does not move to it."""
    repo = one_commit_repo(tmp_path)
    base = git(repo, "rev-parse", "HEAD")
    git(repo, "branch", "someone", base)
    worktree = tmp_path / "wt"
    git(repo, "worktree", "add", "-q", "-b", "task", str(worktree), base)
    git(worktree, "checkout", "-q", "someone")
    git(worktree, "commit", "-q", "--allow-empty", "-m", "agent")
    git(repo, "commit", "-q", "--allow-empty", "-m", "a person's, on main")
    git(worktree, "merge", "-q", "--no-edit", "main")  # the agent brings main's commit in
    error = back_on_branch(worktree, "task", base, "cw/integration")
    assert error is not None and "holds commits of other branches" in error
    assert git(worktree, "rev-parse", "task") == base


def test_a_branch_an_earlier_district_left_is_set_aside_not_worked_on(
    wanderer: District,
) -> None:
    """`rm -rf .cw && cw init` leaves the old district's task branches (and worktrees) in
    git: the new task 1 found `cw/task/1-...` and merged the old work as its own."""
    repo = wanderer.repo
    git(repo, "checkout", "-q", "-b", "old", "cw/integration")
    (repo / "garbage.txt").write_text("an earlier district's work\n")
    git(repo, "add", "garbage.txt")
    git(repo, "commit", "-q", "-m", "wip garbage")
    git(repo, "checkout", "-q", "-")
    wanderer.store.submit(spec({"plain": []}))
    slug = f"{wanderer.store.find_task_id('plain')}-plain"  # as the old district named its own
    old = wanderer.settings.worktree_dir / slug
    git(repo, "worktree", "add", "-q", "-b", f"cw/task/{slug}", str(old), "old")
    shutil.rmtree(old)  # gone with the old .cw, still registered
    dispatch_ready(wanderer.store, make_app(wanderer.settings), wanderer.settings)
    assert wanderer.wait_settled() == {"plain": "done"}
    files = git(repo, "ls-tree", "--name-only", "cw/integration").split()
    assert "plain.txt" in files and "garbage.txt" not in files
    kept = git(repo, "for-each-ref", "--format=%(refname:short)", "refs/heads/cw/stale/")
    assert kept.startswith(f"cw/stale/{slug}-"), "the old work is kept, out of the way"


def test_an_agent_that_removes_its_worktree_fails_once_saying_so(wanderer: District) -> None:
    """Not cw's machinery failing (it was retried six times, each a paid run, and blamed on
    cw): the task fails at once, its commits on its branch, and a retry goes on from them."""
    wanderer.submit({"vanish": []})
    assert wanderer.wait_settled() == {"vanish": "failed"}
    task = wanderer.task("vanish")
    assert str(task["last_error"]).startswith("the agent removed its worktree ")
    assert task["attempt"] == 1 and len(task["runs"]) == 1  # type: ignore[arg-type]
    branch = str(task["branch"])
    assert "vanish.txt" in git(wanderer.repo, "ls-tree", "--name-only", branch).split()


def test_a_repository_made_inside_the_worktree_fails_the_task_not_its_files(
    wanderer: District,
) -> None:
    """`git init` (or a clone) inside the worktree: `git add -A` staged a link to a commit
    only that repository holds, merged as "done", and its files went with the worktree."""
    wanderer.submit({"nested": []})
    assert wanderer.wait_settled() == {"nested": "failed"}
    error = str(wanderer.task("nested")["last_error"])
    assert error.startswith("vendor/lib: a git repository of its own inside the worktree"), error
    worktree = Path(str(wanderer.task("nested")["worktree"]))
    assert (worktree / "vendor/lib/n.txt").is_file(), "nothing removed"
    staged = git(worktree, "diff", "--cached", "--name-only").split()
    assert "vendor/lib" not in staged and "top.txt" in staged


def test_a_repository_the_agent_committed_as_a_link_fails_the_task(wanderer: District) -> None:
    """The agent's own `git add -A` and commit: git warned it, not cw's later add."""
    wanderer.submit({"linked": []})
    assert wanderer.wait_settled() == {"linked": "failed"}
    error = str(wanderer.task("linked")["last_error"])
    assert error.startswith("vendor/copy: a git repository of its own"), error
    assert "`git rm --cached vendor/copy`" in error
    assert "vendor/copy" not in git(wanderer.repo, "ls-tree", "--name-only", "cw/integration")
    worktree = Path(str(wanderer.task("linked")["worktree"]))
    assert (worktree / "vendor/copy/.git").is_dir(), "nothing removed"


def test_a_repository_with_no_commit_inside_the_worktree_is_the_agents_not_cws(
    tmp_path: Path,
) -> None:
    """`git add -A` fails on it: that is no failure of cw's machinery (retried six times)."""
    repo = one_commit_repo(tmp_path)
    git(repo, "init", "-q", "sub")
    (repo / "sub" / "x.txt").write_text("x\n")
    (repo / "kept.txt").write_text("the rest\n")
    with pytest.raises(AgentError, match=r"^sub: a git repository of its own"):
        commit_all(repo, "work", finished=True)
    assert commit_all(repo, "work in progress") is not None, "the rest is committed"
    assert git(repo, "ls-tree", "--name-only", "HEAD").split() == ["kept.txt"]
    git(repo, "-C", "sub", "add", "x.txt")
    git(repo, "-C", "sub", "-c", "user.name=a", "-c", "user.email=a@b", "commit", "-qm", "x")
    (repo / "more.txt").write_text("more\n")
    assert commit_all(repo, "work in progress") is not None, "a link to its commit is not staged"
    assert git(repo, "ls-tree", "--name-only", "HEAD").split() == ["kept.txt", "more.txt"]
