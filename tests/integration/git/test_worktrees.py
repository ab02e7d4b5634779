"""cw.git.worktrees against real git repositories in tmp_path."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import cw
from cw.errors import GitError, NotAGitRepository
from cw.git import kept, runner, treemerge, worktrees
from cw.git.branches import branch_sha, changed_files, diff, ensure_branch, head_sha, is_ancestor
from cw.git.hub import fetch_branch
from cw.git.runner import exclude_path, git_common_dir, prepare_repository, repo_lock, repo_root
from cw.git.treemerge import Check, MergedTree, conflict_markers, merge_into_worktree
from cw.git.worktrees import add_worktree, commit_all, is_dirty, remove_worktree

INTEGRATION = "cw/integration"


def git(cwd: Path, *args: str) -> str:
    """Run git the way a user would, with an identity given on the command line."""
    command = ["git", "-c", "user.name=Test", "-c", "user.email=test@example.com", *args]
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, check=True)
    return done.stdout.strip()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A repository on branch main with one commit holding README.md."""
    root = tmp_path / "repo"
    root.mkdir()
    git(root, "init", "--quiet", "--initial-branch=main")
    (root / "README.md").write_text("hello\n")
    git(root, "add", "README.md")
    git(root, "commit", "--quiet", "-m", "initial")
    return root


@pytest.fixture
def integration(repo: Path) -> str:
    """The integration branch, at main's commit; returns that sha."""
    return ensure_branch(repo, INTEGRATION, "main")


def make_task(repo: Path, tmp_path: Path, name: str, files: dict[str, str]) -> str:
    """A task branch from main with ``files`` written and committed; returns the branch."""
    branch = f"cw/task/{name}"
    worktree = tmp_path / "worktrees" / name
    add_worktree(repo, worktree, branch, git(repo, "rev-parse", "main"))
    for file, text in files.items():
        (worktree / file).write_text(text)
    commit_all(worktree, f"task {name}")
    return branch


# -- repositories and refs -----------------------------------------------------


def test_repo_root_outside_a_repository_raises_not_a_git_repository(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    outside = tmp_path / "outside"
    outside.mkdir()
    with pytest.raises(NotAGitRepository, match="run cw init"):
        repo_root(outside)


def test_repo_root_finds_the_top_from_a_subdirectory_or_a_missing_path(repo: Path) -> None:
    (repo / "sub").mkdir()
    assert repo_root(repo / "sub") == repo
    assert repo_root(repo / "sub" / "not-yet" / "file.txt") == repo
    assert git_common_dir(repo) == repo / ".git"


def test_head_sha_is_none_for_an_unborn_head_and_branch_sha_for_a_missing_branch(
    repo: Path, tmp_path: Path
) -> None:
    empty = tmp_path / "empty"
    git(tmp_path, "init", "--quiet", str(empty))
    assert head_sha(empty) is None
    assert head_sha(repo) == git(repo, "rev-parse", "HEAD")
    assert branch_sha(repo, "main") == head_sha(repo)
    assert branch_sha(repo, "nope") is None


def test_prepare_repository_turns_off_gc_and_is_idempotent(repo: Path) -> None:
    prepare_repository(repo)
    prepare_repository(repo)
    assert git(repo, "config", "--local", "--get-all", "gc.auto") == "0"


def test_ensure_branch_creates_the_branch_once_and_then_leaves_it_alone(repo: Path) -> None:
    first = head_sha(repo)
    assert ensure_branch(repo, "feature", "main") == first
    (repo / "more.txt").write_text("more\n")
    git(repo, "add", "more.txt")
    git(repo, "commit", "--quiet", "-m", "more")
    assert ensure_branch(repo, "feature", "main") == first
    assert branch_sha(repo, "feature") == first


def test_exclude_path_is_idempotent_and_hides_the_path_from_git_status(repo: Path) -> None:
    (repo / ".cw").mkdir()
    (repo / ".cw" / "state.db").write_text("x")
    exclude_path(repo, "/.cw/")
    exclude_path(repo, "/.cw/")
    lines = (git_common_dir(repo) / "info" / "exclude").read_text().splitlines()
    assert lines.count("/.cw/") == 1
    assert git(repo, "status", "--porcelain", "--untracked-files=all") == ""
    assert (repo / ".gitignore").exists() is False


def test_repo_lock_is_a_file_in_the_git_common_dir(repo: Path, tmp_path: Path) -> None:
    add_worktree(repo, tmp_path / "wt", "cw/task/a", git(repo, "rev-parse", "main"))
    with repo_lock(tmp_path / "wt"):
        assert (repo / ".git" / "cw-repo.lock").exists()


# -- worktrees -------------------------------------------------------------------


def test_add_worktree_creates_the_branch_at_the_base_sha_and_is_idempotent(
    repo: Path, tmp_path: Path
) -> None:
    base = git(repo, "rev-parse", "main")
    worktree = tmp_path / "worktrees" / "one"
    add_worktree(repo, worktree, "cw/task/one", base)
    add_worktree(repo, worktree, "cw/task/one", base)
    assert branch_sha(repo, "cw/task/one") == base
    assert git(worktree, "symbolic-ref", "HEAD") == "refs/heads/cw/task/one"
    assert (worktree / "README.md").read_text() == "hello\n"
    upstream = subprocess.run(["git", "config", "--get-regexp", "^branch\\."], cwd=repo)
    assert upstream.returncode == 1  # --no-track: no branch.* config written


def test_add_worktree_refuses_a_path_that_is_a_worktree_on_another_branch(
    repo: Path, tmp_path: Path
) -> None:
    base = git(repo, "rev-parse", "main")
    add_worktree(repo, tmp_path / "wt", "cw/task/one", base)
    with pytest.raises(GitError, match="not on cw/task/two"):
        add_worktree(repo, tmp_path / "wt", "cw/task/two", base)


def test_adding_or_removing_a_worktree_does_not_ask_git_about_every_other_one(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under cw's repository lock, which every agent of a host takes in turn, the usual add and
    removal cost the same with five worktrees as with five hundred."""
    base = git(repo, "rev-parse", "main")
    for name in ("a", "b", "c"):
        add_worktree(repo, tmp_path / name, f"cw/task/{name}", base)
    ran: list[tuple[str, ...]] = []
    execute = runner._execute

    def spy(cwd: Path, args: tuple[str, ...], **kwargs: Any) -> tuple[int, Any, str]:
        ran.append(args)
        return execute(cwd, args, **kwargs)

    monkeypatch.setattr(runner, "_execute", spy)
    add_worktree(repo, tmp_path / "d", "cw/task/d", base)
    add_worktree(repo, tmp_path / "d", "cw/task/d", base)
    (tmp_path / "d" / "work.txt").write_text("done\n")
    remove_worktree(repo, tmp_path / "d")
    assert [args[:2] for args in ran if args[0] in ("worktree", "rev-parse")] == [
        ("worktree", "add"),  # a new branch: git is not asked whether it exists
        ("worktree", "prune"),  # the removed one's own entry: its directory is gone by then
    ]
    assert git(repo, "log", "-1", "--format=%s", "cw/task/d") == "cw: WIP"


def test_a_worktree_someone_locked_is_removed_all_the_same(repo: Path, tmp_path: Path) -> None:
    worktree = tmp_path / "locked"
    add_worktree(repo, worktree, "cw/task/locked", git(repo, "rev-parse", "main"))
    git(repo, "worktree", "lock", "--reason", "a person's", str(worktree))
    remove_worktree(repo, worktree)
    assert not worktree.exists()
    assert str(worktree) not in git(repo, "worktree", "list")


def test_a_worktree_of_another_repository_is_neither_taken_nor_removed(
    repo: Path, tmp_path: Path
) -> None:
    other = tmp_path / "other"
    shutil.copytree(repo, other)
    add_worktree(other, tmp_path / "wt", "cw/task/one", git(other, "rev-parse", "main"))
    with pytest.raises(GitError, match="not a worktree"):
        remove_worktree(repo, tmp_path / "wt")
    with pytest.raises(GitError):
        add_worktree(repo, tmp_path / "wt", "cw/task/one", git(repo, "rev-parse", "main"))
    assert git(tmp_path / "wt", "rev-parse", "--abbrev-ref", "HEAD") == "cw/task/one"
    assert str(tmp_path / "wt") not in git(repo, "worktree", "list")


def test_add_worktree_recreates_a_deleted_worktree_from_its_branch_with_the_work_intact(
    repo: Path, tmp_path: Path
) -> None:
    base = git(repo, "rev-parse", "main")
    worktree = tmp_path / "worktrees" / "resumed"
    add_worktree(repo, worktree, "cw/task/resumed", base)
    (worktree / "work.txt").write_text("done so far\n")
    commit_all(worktree, "progress")
    shutil.rmtree(worktree)  # the admin entry in .git/worktrees is now stale
    add_worktree(repo, worktree, "cw/task/resumed", base)
    assert (worktree / "work.txt").read_text() == "done so far\n"
    assert git(worktree, "symbolic-ref", "HEAD") == "refs/heads/cw/task/resumed"


def test_add_worktree_resumes_a_task_whose_branch_git_packed(repo: Path, tmp_path: Path) -> None:
    base = git(repo, "rev-parse", "main")
    worktree = tmp_path / "worktrees" / "packed"
    add_worktree(repo, worktree, "cw/task/packed", base)
    (worktree / "work.txt").write_text("done so far\n")
    commit_all(worktree, "progress")
    remove_worktree(repo, worktree)
    git(repo, "pack-refs", "--all")  # as `git gc` does: no loose ref file for the branch
    assert not (repo / ".git" / "refs" / "heads" / "cw" / "task" / "packed").exists()
    add_worktree(repo, worktree, "cw/task/packed", base)
    assert (worktree / "work.txt").read_text() == "done so far\n"
    assert git(worktree, "symbolic-ref", "HEAD") == "refs/heads/cw/task/packed"


_ADD_IN_A_PROCESS = """
import sys, time
from pathlib import Path
from cw.git.worktrees import add_worktree
repo, path, branch, sha, ready, go = sys.argv[1:]
Path(ready).touch()
while not Path(go).exists():
    time.sleep(0.002)
add_worktree(Path(repo), Path(path), branch, sha)
"""


def spawn_add(repo: Path, i: int, base: str, signals: Path) -> subprocess.Popen[str]:
    """A python process that adds worktree t<i> once the go signal appears."""
    args = [str(repo), str(repo / ".cw" / f"t{i}"), f"cw/task/t{i}", base]
    signal_files = [str(signals / f"ready{i}"), str(signals / "go")]
    env = {**os.environ, "PYTHONPATH": str(Path(cw.__file__).parents[1])}
    command = [sys.executable, "-c", _ADD_IN_A_PROCESS, *args, *signal_files]
    return subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)


def test_sixteen_processes_adding_worktrees_at_once_all_succeed(repo: Path, tmp_path: Path) -> None:
    base = git(repo, "rev-parse", "main")
    signals = tmp_path / "signals"
    signals.mkdir()
    processes = [spawn_add(repo, i, base, signals) for i in range(16)]
    try:
        deadline = time.monotonic() + 60
        while len(list(signals.glob("ready*"))) < 16 and time.monotonic() < deadline:
            time.sleep(0.01)
        (signals / "go").touch()
        errors = [p.communicate(timeout=60)[1] for p in processes]
    finally:
        for p in processes:  # none left running, no pipe left for the next test's collector
            p.kill()
            p.communicate()
    assert [p.returncode for p in processes] == [0] * 16, errors
    for i in range(16):
        assert (repo / ".cw" / f"t{i}" / "README.md").exists()
        assert branch_sha(repo, f"cw/task/t{i}") == base


def test_commit_all_needs_no_git_identity_and_returns_none_when_clean(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    for variable in ("EMAIL", "GIT_AUTHOR_NAME", "GIT_AUTHOR_EMAIL", "GIT_COMMITTER_NAME"):
        monkeypatch.delenv(variable, raising=False)
    worktree = tmp_path / "wt"
    add_worktree(repo, worktree, "cw/task/anon", git(repo, "rev-parse", "main"))
    assert commit_all(worktree, "nothing") is None
    (worktree / "new.txt").write_text("new\n")
    sha = commit_all(worktree, "add new", author="agent-7")
    assert sha == branch_sha(repo, "cw/task/anon")
    assert git(worktree, "log", "-1", "--format=%an <%ae> / %cn") == "agent-7 <cw@localhost> / cw"
    assert commit_all(worktree, "again") is None


def test_commit_all_returns_the_new_head_in_a_linked_worktree_and_in_the_main_one(
    repo: Path, tmp_path: Path
) -> None:
    worktree = tmp_path / "wt"
    add_worktree(repo, worktree, "cw/task/heads", git(repo, "rev-parse", "main"))
    for where in (worktree, repo):  # read from git's files; the main worktree asks git
        (where / f"{where.name}.txt").write_text("new\n")
        assert commit_all(where, "new") == git(where, "rev-parse", "HEAD")
    git(worktree, "switch", "--quiet", "--detach")
    (worktree / "detached.txt").write_text("new\n")
    assert commit_all(worktree, "detached") == git(worktree, "rev-parse", "HEAD")


def test_commit_all_is_not_stopped_by_failing_hooks(repo: Path, tmp_path: Path) -> None:
    hooks = repo / ".git" / "hooks"
    for hook in ("pre-commit", "commit-msg", "prepare-commit-msg"):
        (hooks / hook).write_text("#!/bin/sh\nexit 1\n")
        (hooks / hook).chmod(0o755)
    worktree = tmp_path / "wt"
    add_worktree(repo, worktree, "cw/task/hooked", git(repo, "rev-parse", "main"))
    (worktree / "file.txt").write_text("x\n")
    assert commit_all(worktree, "despite hooks") is not None
    assert not is_dirty(worktree)


def test_remove_worktree_commits_uncommitted_work_to_the_branch_first(
    repo: Path, tmp_path: Path
) -> None:
    worktree = tmp_path / "wt"
    add_worktree(repo, worktree, "cw/task/wip", git(repo, "rev-parse", "main"))
    (worktree / "unsaved.txt").write_text("precious\n")
    (worktree / "README.md").write_text("edited\n")
    assert is_dirty(worktree)
    remove_worktree(repo, worktree, force_commit_message="cw: WIP of wip")
    assert not worktree.exists()
    assert git(repo, "show", "cw/task/wip:unsaved.txt") == "precious"
    assert git(repo, "show", "cw/task/wip:README.md") == "edited"
    assert git(repo, "log", "-1", "--format=%s", "cw/task/wip") == "cw: WIP of wip"
    assert str(worktree) not in git(repo, "worktree", "list")


def test_remove_worktree_of_a_deleted_directory_just_prunes(repo: Path, tmp_path: Path) -> None:
    worktree = tmp_path / "wt"
    add_worktree(repo, worktree, "cw/task/gone", git(repo, "rev-parse", "main"))
    shutil.rmtree(worktree)
    remove_worktree(repo, worktree)
    remove_worktree(repo, worktree)
    assert str(worktree) not in git(repo, "worktree", "list")
    assert branch_sha(repo, "cw/task/gone") is not None


def test_remove_worktree_refuses_the_main_checkout_and_plain_directories(
    repo: Path, tmp_path: Path
) -> None:
    (repo / "dirty.txt").write_text("user's work\n")
    with pytest.raises(GitError, match="main worktree"):
        remove_worktree(repo, repo)
    plain = tmp_path / "plain"
    plain.mkdir()
    with pytest.raises(GitError, match="not a worktree"):
        remove_worktree(repo, plain)
    assert git(repo, "status", "--porcelain") == "?? dirty.txt"


# -- diffs -----------------------------------------------------------------------


def test_diff_of_a_worktree_includes_uncommitted_and_untracked_work(
    repo: Path, tmp_path: Path
) -> None:
    base = git(repo, "rev-parse", "main")
    worktree = tmp_path / "wt"
    add_worktree(repo, worktree, "cw/task/d", base)
    (worktree / "committed.txt").write_text("committed\n")
    commit_all(worktree, "one")
    (worktree / "README.md").write_text("changed, not staged\n")
    (worktree / "untracked.txt").write_text("brand new\n")
    patch = diff(repo, base, worktree=worktree)
    assert "+committed" in patch
    assert "+changed, not staged" in patch
    assert "+brand new" in patch
    stat = diff(repo, base, worktree=worktree, stat=True)
    assert "3 files changed" in stat
    assert git(worktree, "diff", "--cached", "--name-only") == ""  # its own index untouched
    assert "?? untracked.txt" in git(worktree, "status", "--porcelain")


def test_diff_and_changed_files_of_a_branch_show_only_the_branch_side(
    repo: Path, tmp_path: Path
) -> None:
    base = git(repo, "rev-parse", "main")
    branch = make_task(repo, tmp_path, "b", {"feature.txt": "feature\n"})
    (repo / "main-only.txt").write_text("main moved on\n")
    git(repo, "add", "main-only.txt")
    git(repo, "commit", "--quiet", "-m", "main moves")
    patch = diff(repo, "main", branch=branch)
    assert "+feature" in patch
    assert "main-only" not in patch
    assert patch.endswith("\n")
    assert "1 file changed" in diff(repo, base, branch=branch, stat=True)
    assert changed_files(repo, "main", branch) == ["feature.txt"]
    assert is_ancestor(repo, base, branch)
    assert not is_ancestor(repo, branch, "main")


def test_diff_needs_exactly_one_of_worktree_or_branch(repo: Path) -> None:
    with pytest.raises(ValueError, match="exactly one"):
        diff(repo, "main")


# -- merging ---------------------------------------------------------------------


@dataclass(frozen=True)
class MergeOutcome:
    merged: bool
    sha: str | None  # the integration branch's new tip when merged
    conflict_files: list[str]
    output: str  # git's messages
    rejected: bool = False  # merged cleanly, but the check refused the result
    already_merged: bool = False  # the branch brought nothing new: no merge commit


def merge_branch(
    repo: Path,
    worktree: Path,
    integration_branch: str,
    branch: str,
    message: str,
    check: Check | None = None,
    *,
    rerere: bool = False,
) -> MergeOutcome:
    """One branch merged as a merge train of one car merges it (cw/git/train.py): onto the
    tip in the object database, the check, then the branch moved by a compare-and-set."""
    old = treemerge.tip_of(repo, integration_branch)
    step = treemerge.merge_onto(repo, worktree, old, branch, message, rerere=rerere)
    if step.merged is None:
        return MergeOutcome(False, None, step.conflicts, step.messages)
    if check is not None and not check(step.merged):
        if step.merged.checked_out:
            treemerge.reset_worktree(worktree, old)
        return MergeOutcome(False, None, [], step.messages, rejected=True)
    if step.already_merged:
        return MergeOutcome(True, old, [], step.messages, already_merged=True)
    treemerge.advance(repo, integration_branch, old, step.merged.new)
    return MergeOutcome(True, step.merged.new, [], step.messages)


def on_disk(merged: MergedTree) -> bool:
    """A check that needs the merged files on disk, as a verify command does."""
    return merged.checkout().is_dir()


def test_a_clean_merge_advances_the_integration_branch_and_leaves_the_user_checkout_alone(
    repo: Path, tmp_path: Path, integration: str
) -> None:
    branch = make_task(repo, tmp_path, "clean", {"feature.txt": "feature\n"})
    (repo / "user-edit.txt").write_text("uncommitted user work\n")
    before = (git(repo, "symbolic-ref", "HEAD"), head_sha(repo), git(repo, "status", "-s"))
    outcome = merge_branch(repo, tmp_path / "integration", INTEGRATION, branch, "merge clean")
    assert outcome.merged
    assert outcome.conflict_files == []
    assert outcome.sha == branch_sha(repo, INTEGRATION) != integration
    assert git(repo, "log", "-1", "--format=%s %P", INTEGRATION).split() == [
        "merge",
        "clean",
        integration,
        branch_sha(repo, branch),
    ]
    assert git(repo, "show", f"{INTEGRATION}:feature.txt") == "feature"
    assert (git(repo, "symbolic-ref", "HEAD"), head_sha(repo), git(repo, "status", "-s")) == before
    assert not (tmp_path / "integration").exists(), "no worktree needed without a check"


def test_a_conflicting_merge_reports_the_files_and_changes_nothing(
    repo: Path, tmp_path: Path, integration: str
) -> None:
    first = make_task(repo, tmp_path, "first", {"README.md": "first\n"})
    second = make_task(repo, tmp_path, "second", {"README.md": "second\n", "other.txt": "o\n"})
    worktree = tmp_path / "integration"
    merged = merge_branch(repo, worktree, INTEGRATION, first, "merge first")
    outcome = merge_branch(repo, worktree, INTEGRATION, second, "merge second")
    assert not outcome.merged
    assert outcome.sha is None
    assert outcome.conflict_files == ["README.md"]
    assert "CONFLICT" in outcome.output
    assert branch_sha(repo, INTEGRATION) == merged.sha
    assert not worktree.exists(), "merging needs no worktree unless a check wants the files"


def test_merging_an_already_merged_branch_again_is_a_no_op(
    repo: Path, tmp_path: Path, integration: str
) -> None:
    branch = make_task(repo, tmp_path, "twice", {"feature.txt": "feature\n"})
    first = merge_branch(repo, tmp_path / "integration", INTEGRATION, branch, "merge")
    again = merge_branch(repo, tmp_path / "integration", INTEGRATION, branch, "merge")
    assert again == MergeOutcome(True, first.sha, [], again.output, already_merged=True)
    assert branch_sha(repo, INTEGRATION) == first.sha


def test_a_branch_with_nothing_new_still_passes_the_check_before_it_counts_as_merged(
    repo: Path, tmp_path: Path, integration: str
) -> None:
    idle = make_task(repo, tmp_path, "idle", {})
    seen: list[str] = []

    def check(merged: MergedTree) -> bool:
        seen.append(merged.new)
        return (merged.checkout() / "hello.txt").exists()

    outcome = merge_branch(repo, tmp_path / "integration", INTEGRATION, idle, "merge", check)
    assert outcome == MergeOutcome(False, None, [], outcome.output, rejected=True)
    assert seen == [integration], "the check ran on the integration branch as it stands"
    assert branch_sha(repo, INTEGRATION) == integration


def test_a_crashed_merge_left_in_the_integration_worktree_is_cleaned_before_the_next(
    repo: Path, tmp_path: Path, integration: str
) -> None:
    worktree = tmp_path / "integration"
    first = make_task(repo, tmp_path, "first", {"README.md": "first\n"})
    clash = make_task(repo, tmp_path, "clash", {"README.md": "clash\n"})
    later = make_task(repo, tmp_path, "later", {"later.txt": "later\n"})
    merge_branch(repo, worktree, INTEGRATION, first, "merge first", check=on_disk)
    with pytest.raises(subprocess.CalledProcessError):
        git(worktree, "merge", clash)  # a half merge, conflicts in the tree
    (worktree / "junk.txt").write_text("junk\n")
    (git_common_dir(repo) / "worktrees" / "integration" / "index.lock").write_text("")
    outcome = merge_branch(repo, worktree, INTEGRATION, later, "merge later", check=on_disk)
    assert outcome.merged
    assert git(repo, "ls-tree", "--name-only", INTEGRATION).split() == ["README.md", "later.txt"]
    assert git(repo, "show", f"{INTEGRATION}:README.md") == "first"
    assert not (worktree / "junk.txt").exists()
    assert not is_dirty(worktree)


def test_a_deleted_integration_worktree_is_recreated(
    repo: Path, tmp_path: Path, integration: str
) -> None:
    worktree = tmp_path / "integration"
    one = make_task(repo, tmp_path, "one", {"one.txt": "1\n"})
    two = make_task(repo, tmp_path, "two", {"two.txt": "2\n"})
    merge_branch(repo, worktree, INTEGRATION, one, "merge one", check=on_disk)
    shutil.rmtree(worktree)
    assert merge_branch(repo, worktree, INTEGRATION, two, "merge two", check=on_disk).merged
    assert (worktree / "two.txt").exists()
    assert git(repo, "ls-tree", "--name-only", INTEGRATION).split() == [
        "README.md",
        "one.txt",
        "two.txt",
    ]


def test_merging_works_while_the_user_has_the_integration_branch_checked_out(
    repo: Path, tmp_path: Path, integration: str
) -> None:
    git(repo, "switch", "--quiet", INTEGRATION)
    branch = make_task(repo, tmp_path, "checked", {"feature.txt": "feature\n"})
    outcome = merge_branch(repo, tmp_path / "integration", INTEGRATION, branch, "merge")
    assert outcome.merged
    assert branch_sha(repo, INTEGRATION) == outcome.sha
    assert git(repo, "symbolic-ref", "HEAD") == f"refs/heads/{INTEGRATION}"
    assert not (repo / "feature.txt").exists()  # the user's files are not touched


def test_merge_refuses_to_advance_an_integration_branch_that_moved(
    repo: Path, tmp_path: Path, integration: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    branch = make_task(repo, tmp_path, "raced", {"feature.txt": "feature\n"})
    elsewhere = make_task(repo, tmp_path, "elsewhere", {"x.txt": "x\n"})
    real_advance = treemerge.advance

    def someone_moves_it_first(repo: Path, name: str, old: str, new: str) -> None:
        git(repo, "update-ref", f"refs/heads/{name}", git(repo, "rev-parse", elsewhere))
        real_advance(repo, name, old, new)

    monkeypatch.setattr(treemerge, "advance", someone_moves_it_first)
    with pytest.raises(GitError, match="moved"):
        merge_branch(repo, tmp_path / "integration", INTEGRATION, branch, "merge")
    assert branch_sha(repo, INTEGRATION) == branch_sha(repo, elsewhere)


def _kept(command: str) -> kept._Kept:
    (process,) = [p for key, p in kept._processes.items() if key[2][0] == command]
    return process


def test_one_kept_update_ref_moves_a_ref_by_compare_and_set_and_restarts_after_a_refusal(
    repo: Path, integration: str
) -> None:
    ref = f"refs/heads/{INTEGRATION}"
    first = git(repo, "rev-parse", ref)
    second = git(repo, "commit-tree", f"{first}^{{tree}}", "-p", first, "-m", "two")
    third = git(repo, "commit-tree", f"{first}^{{tree}}", "-p", second, "-m", "three")
    assert kept.move_ref(repo, ref, second, first, "cw: test") is None
    updater = _kept("update-ref")
    assert updater.proc is not None
    pid = updater.proc.pid
    refused = kept.move_ref(repo, ref, third, first, "cw: test")  # it is at second now
    assert refused is not None and "expected" in refused, refused
    assert git(repo, "rev-parse", ref) == second and updater.proc is None
    assert kept.move_ref(repo, ref, third, second, "cw: test") is None  # a new process
    assert updater.proc is not None and updater.proc.pid != pid
    updater.proc.kill()  # ended while idle: the next move starts another and moves
    updater.proc.wait()
    assert kept.move_ref(repo, ref, first, third, "cw: test") is None
    assert git(repo, "rev-parse", ref) == first
    assert "cw: test" in git(repo, "reflog", "-1", "--format=%gs", ref)


def test_a_kept_hash_object_writes_the_commit_git_commit_tree_writes(
    repo: Path, integration: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    one = git(repo, "rev-parse", f"refs/heads/{INTEGRATION}")
    two = git(repo, "commit-tree", f"{one}^{{tree}}", "-p", one, "-m", "two")
    tree = git(repo, "rev-parse", f"{two}^{{tree}}")
    stamp = "1700000000 -0130"
    monkeypatch.setattr(kept, "_now", lambda: stamp)
    for message in ("cw: merge t1: a task", "cw: merge t2: two\nlines\n", "naïve ☃"):
        ours = kept.write_commit(repo, tree, [one, two], message)
        dates = {"GIT_AUTHOR_DATE": stamp, "GIT_COMMITTER_DATE": stamp}
        theirs = subprocess.run(
            ["git", "commit-tree", tree, "-p", one, "-p", two, "-m", message],
            cwd=repo,
            env={**os.environ, **runner.identity(), **dates},
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        assert ours == theirs
    writer = _kept("hash-object")
    assert writer.proc is not None
    writer.proc.kill()
    writer.proc.wait()
    assert kept.write_commit(repo, tree, [two], "x")  # started again


def test_kept_commits_written_from_threads_at_once_are_each_their_own(
    repo: Path, integration: str
) -> None:
    one = git(repo, "rev-parse", f"refs/heads/{INTEGRATION}")
    tree = git(repo, "rev-parse", f"{one}^{{tree}}")
    with ThreadPoolExecutor(8) as pool:
        shas = list(pool.map(lambda i: kept.write_commit(repo, tree, [one], f"m{i}"), range(64)))
    assert [git(repo, "log", "-1", "--format=%s", sha) for sha in shas] == [
        f"m{i}" for i in range(64)
    ]


def test_a_process_that_wrote_kept_commits_leaves_no_file_behind(repo: Path) -> None:
    code = (
        "import sys; from pathlib import Path; from cw.git import kept, runner\n"
        "repo = Path(sys.argv[1]); one = runner.run(repo, 'rev-parse', 'HEAD')\n"
        "tree = runner.run(repo, 'rev-parse', 'HEAD^{tree}')\n"
        "print(kept.write_commit(repo, tree, [one], 'x'))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(repo)], capture_output=True, text=True, check=True
    )
    assert len(out.stdout.strip()) == 40, out
    assert not list((repo / ".git").glob("cw-commit-*"))


def test_branch_tips_are_found_whether_their_refs_are_loose_or_packed(
    repo: Path, tmp_path: Path, integration: str
) -> None:
    branch = make_task(repo, tmp_path, "packed", {"p.txt": "p\n"})
    tip = git(repo, "rev-parse", branch)
    assert branch_sha(repo, branch) == tip  # from its loose ref file
    git(repo, "pack-refs", "--all")
    assert not (git_common_dir(repo) / "refs" / "heads" / branch).exists()
    assert branch_sha(repo, branch) == tip  # from git
    assert branch_sha(repo, "no/such/branch") is None
    outcome = merge_branch(repo, tmp_path / "integration", INTEGRATION, branch, "merge packed")
    assert outcome.merged and branch_sha(repo, INTEGRATION) == outcome.sha


def test_an_integration_worktree_found_on_a_branch_is_detached_before_merging(
    repo: Path, tmp_path: Path, integration: str
) -> None:
    worktree = tmp_path / "integration"
    one = make_task(repo, tmp_path, "one", {"one.txt": "1\n"})
    merge_branch(repo, worktree, INTEGRATION, one, "merge one", check=on_disk)
    git(worktree, "switch", "--quiet", INTEGRATION)  # someone checked the branch out there
    two = make_task(repo, tmp_path, "two", {"two.txt": "2\n"})
    assert merge_branch(repo, worktree, INTEGRATION, two, "merge two", check=on_disk).merged
    assert git(worktree, "rev-parse", "--abbrev-ref", "HEAD") == "HEAD"
    git(repo, "switch", "--quiet", INTEGRATION)  # free for the user to check out


# -- a bounced task catching up ---------------------------------------------------


def caught_up(repo: Path, tmp_path: Path, name: str) -> tuple[Path, str]:
    """Task ``name``'s worktree, whose README.md conflicts with the integration branch's, after
    its catch-up merge (left in progress); and the integration branch's sha it merged."""
    ours = make_task(repo, tmp_path, f"{name}-ours", {"README.md": "ours\n"})
    merge_branch(repo, tmp_path / "integration", INTEGRATION, ours, f"merge {name}-ours")
    make_task(repo, tmp_path, name, {"README.md": "theirs\n"})
    worktree = tmp_path / "worktrees" / name
    head = git(repo, "rev-parse", INTEGRATION)
    assert merge_into_worktree(worktree, head, "catch up") == ["README.md"]
    return worktree, head


def test_catching_up_leaves_markers_until_resolved_then_commit_all_concludes_the_merge(
    repo: Path, tmp_path: Path, integration: str
) -> None:
    worktree, head = caught_up(repo, tmp_path, "theirs")
    assert conflict_markers(worktree) == ["README.md"]
    (worktree / "README.md").write_text("ours\ntheirs\n")
    assert conflict_markers(worktree) == []
    commit_all(worktree, "resolved", finished=True)
    parents = git(worktree, "log", "-1", "--format=%P").split()
    assert len(parents) == 2 and head in parents, "the catch-up is a real merge commit"


def test_marker_lines_a_file_held_before_are_content_not_conflicts(
    repo: Path, tmp_path: Path, integration: str
) -> None:
    """A document about git holds marker-like lines: the task that edits it (even removing
    one) has no conflict; markers a merge adds, in a file both sides added too, are found."""
    legit = "<<<<<<< HEAD\nan example\n=======\nanother\n>>>>>>> topic\n"
    make_task(repo, tmp_path, "docs", {"git.md": legit, "both.txt": "ours\n"})
    worktree = tmp_path / "worktrees" / "docs"
    (worktree / "git.md").write_text(legit.replace(">>>>>>> topic\n", "") + "more\n")
    assert conflict_markers(worktree) == []
    commit_all(worktree, "docs edited")
    theirs = make_task(repo, tmp_path, "theirs-both", {"both.txt": "theirs\n"})
    merge_branch(repo, tmp_path / "integration", INTEGRATION, theirs, "merge theirs")
    head = git(repo, "rev-parse", INTEGRATION)
    assert merge_into_worktree(worktree, head, "catch up") == ["both.txt"]  # added by both
    assert conflict_markers(worktree) == ["both.txt"]


def test_longer_markers_set_by_gitattributes_are_conflicts_too(
    repo: Path, tmp_path: Path, integration: str
) -> None:
    """`conflict-marker-size=10` makes git write ten signs: markers all the same."""
    (repo / ".gitattributes").write_text("README.md conflict-marker-size=10\n")
    git(repo, "add", ".gitattributes")
    git(repo, "commit", "-q", "-m", "longer markers")
    git(repo, "branch", "-f", INTEGRATION, "HEAD")
    worktree, _head = caught_up(repo, tmp_path, "long")
    assert "<<<<<<<<<< " in (worktree / "README.md").read_text()
    assert conflict_markers(worktree) == ["README.md"]
    assert conflict_markers(worktree, ["README.md"]) == ["README.md"]


def test_a_finished_agent_concludes_a_catch_up_resolved_wholly_in_its_favour(
    repo: Path, tmp_path: Path, integration: str
) -> None:
    """Resolving every conflict in the task's favour leaves the tree as the task's HEAD: the
    merge must still be committed, or the next merge meets the same conflict again."""
    worktree, head = caught_up(repo, tmp_path, "kept")
    before = git(worktree, "rev-parse", "HEAD")
    (worktree / "README.md").write_text("theirs\n")  # the task's own version, as it was
    assert commit_all(worktree, "cw: WIP") is None, "work in progress resolves nothing"
    assert git(worktree, "rev-parse", "--verify", "MERGE_HEAD") == head, "the merge stays open"
    sha = commit_all(worktree, "resolved", finished=True)
    assert sha is not None and sha != before
    assert git(worktree, "log", "-1", "--format=%P").split() == [before, head]
    assert is_ancestor(repo, head, sha), "integration's side is merged: no conflict again"
    assert commit_all(worktree, "again", finished=True) is None


def test_markers_committed_with_work_in_progress_are_found_in_the_conflicted_files(
    repo: Path, tmp_path: Path, integration: str
) -> None:
    """An agent that did not finish has its work committed, the catch-up's markers with it:
    they are no change since HEAD any more, but the files the merge conflicted on hold them."""
    worktree, _ = caught_up(repo, tmp_path, "wip")
    (worktree / "notes.txt").write_text("half done\n")
    assert commit_all(worktree, "cw: WIP (failed)") is not None, "the work is kept"
    assert not worktrees.merge_in_progress(worktree)
    assert conflict_markers(worktree) == []
    assert conflict_markers(worktree, ["README.md", "notes.txt"]) == ["README.md"]


def test_a_check_that_says_no_keeps_the_integration_branch_where_it_was(
    repo: Path, tmp_path: Path, integration: str
) -> None:
    branch = make_task(repo, tmp_path, "checked", {"new.txt": "x\n"})
    seen: list[Path] = []

    def refuse(merged: MergedTree) -> bool:
        tree = merged.checkout()
        seen.append(tree)
        return not (tree / "new.txt").exists()

    outcome = merge_branch(repo, tmp_path / "integration", INTEGRATION, branch, "m", check=refuse)
    assert outcome.rejected and not outcome.merged and outcome.sha is None
    assert git(repo, "rev-parse", INTEGRATION) == integration
    assert seen == [tmp_path / "integration"]
    assert not (tmp_path / "integration" / "new.txt").exists(), "worktree reset to the old tip"


# -- the rerere rule -----------------------------------------------------------------


def test_rerere_replays_a_resolution_an_agent_recorded_and_the_check_still_sees_it(
    repo: Path, tmp_path: Path, integration: str
) -> None:
    ours = make_task(repo, tmp_path, "ours", {"README.md": "ours\n"})
    worktree = tmp_path / "integration"
    merge_branch(repo, worktree, INTEGRATION, ours, "merge ours", rerere=True)
    theirs = make_task(repo, tmp_path, "theirs", {"README.md": "theirs\n"})
    # Nothing recorded yet: rerere has nothing to replay, the conflict stands.
    assert merge_branch(repo, worktree, INTEGRATION, theirs, "m", rerere=True).conflict_files == [
        "README.md"
    ]
    # The bounced agent catches up, resolves, and commits with its own git (rerere on).
    agent_tree = tmp_path / "worktrees" / "theirs"
    head = git(repo, "rev-parse", INTEGRATION)
    assert merge_into_worktree(agent_tree, head, "catch up", rerere=True) == ["README.md"]
    (agent_tree / "README.md").write_text("ours\ntheirs\n")
    agent_env = {**os.environ, **treemerge.RERERE_ENV}
    agent_env |= {"GIT_AUTHOR_NAME": "a", "GIT_AUTHOR_EMAIL": "a@x", "GIT_COMMITTER_NAME": "a"}
    agent_env |= {"GIT_COMMITTER_EMAIL": "a@x"}
    for args in (["add", "README.md"], ["commit", "-q", "--no-edit"]):
        subprocess.run(["git", *args], cwd=agent_tree, env=agent_env, check=True)

    # Another branch brings the same conflict: the recorded resolution settles it.
    again = make_task(repo, tmp_path, "again", {"README.md": "theirs\n", "again.txt": "a\n"})
    assert merge_branch(repo, worktree, INTEGRATION, again, "m").conflict_files == ["README.md"]
    seen: list[MergedTree] = []

    def check(merged: MergedTree) -> bool:
        seen.append(merged)
        return True

    outcome = merge_branch(repo, worktree, INTEGRATION, again, "merge again", check, rerere=True)
    assert outcome.merged
    assert git(repo, "show", f"{INTEGRATION}:README.md") == "ours\ntheirs"
    assert git(repo, "show", f"{INTEGRATION}:again.txt") == "a"
    parents = git(repo, "log", "-1", "--format=%P", INTEGRATION).split()
    assert parents == [head, branch_sha(repo, again)]
    assert seen and seen[0].auto_merged is None, "a replayed resolution is always checked"
    assert not is_dirty(worktree)


# -- the hub ---------------------------------------------------------------------


def hub_with(repo: Path, tmp_path: Path, branch: str) -> Path:
    """A bare hub holding ``repo``'s main as ``branch``."""
    hub = tmp_path / "hub.git"
    git(tmp_path, "init", "--quiet", "--bare", str(hub))
    git(repo, "push", "--quiet", str(hub), f"main:refs/heads/{branch}")
    return hub


def test_a_fetch_during_another_worktree_add_waits_for_it_instead_of_failing(
    repo: Path, tmp_path: Path
) -> None:
    hub = hub_with(repo, tmp_path, "cw/task/1-a")
    worktrees.add_worktree(repo, tmp_path / "wt", "cw/task/2-b", git(repo, "rev-parse", "main"))
    head = git_common_dir(repo) / "worktrees" / "wt" / "HEAD"
    real = head.read_text()
    head.write_text("0" * 40 + "\n")  # what `git worktree add` writes first
    fixed = threading.Timer(0.5, head.write_text, [real])
    fixed.start()
    try:
        assert fetch_branch(repo, str(hub), "cw/task/1-a", "refs/cw-hub/heads/1-a")
    finally:
        fixed.join()
    assert branch_sha(repo, "main") == git(repo, "rev-parse", "refs/cw-hub/heads/1-a")


def test_a_fetch_racing_another_fetch_for_its_ref_waits_instead_of_failing(
    repo: Path, tmp_path: Path
) -> None:
    hub = hub_with(repo, tmp_path, "cw/integration")
    lock = git_common_dir(repo) / "refs" / "heads" / "cw" / "integration.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    lock.write_text("")  # another agent's fetch of the same branch, still writing the ref
    released = threading.Timer(0.5, lock.unlink)
    released.start()
    try:
        assert fetch_branch(repo, str(hub), "cw/integration", "refs/heads/cw/integration")
    finally:
        released.join()
    assert branch_sha(repo, "cw/integration") == git(repo, "rev-parse", "main")


def test_a_fetch_that_fails_for_good_says_why(repo: Path, tmp_path: Path) -> None:
    with pytest.raises(GitError, match="git fetch failed"):
        fetch_branch(repo, str(tmp_path / "nowhere"), "main", "refs/cw-hub/heads/x")
