"""Repositories of their own inside a worktree, found in what was staged or committed."""

from __future__ import annotations

from pathlib import Path

from cw.git import nested
from tests.integration.conftest import git

ME = ("-c", "user.name=a", "-c", "user.email=a@b")


def repo_with_commit(path: Path) -> Path:
    path.mkdir(parents=True)
    git(path, "init", "-q", "-b", "main")
    (path / "f.txt").write_text("f\n")
    git(path, "add", "f.txt")
    git(path, *ME, "commit", "-qm", "start")
    return path


def test_a_committed_link_is_found_and_a_registered_submodule_is_not(tmp_path: Path) -> None:
    repo = repo_with_commit(tmp_path / "repo")
    other = repo_with_commit(tmp_path / "other")
    start = git(repo, "rev-parse", "HEAD")
    git(repo, "-c", "protocol.file.allow=always", "submodule", "add", "-q", str(other), "mod")
    git(repo, *ME, "commit", "-qm", "a submodule")
    assert nested.committed(repo, start) == [], "registered in .gitmodules"
    git(repo, "clone", "-q", str(other), "copy")
    git(repo, "add", "copy")  # git warns, and stages a link
    git(repo, *ME, "commit", "-qm", "a copy")
    assert nested.committed(repo, start) == ["copy"]
    assert nested.committed(repo, git(repo, "rev-parse", "HEAD")) == [], "nothing since"
