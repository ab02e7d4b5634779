"""A district whose files were damaged or misplaced: one clear line and exit 2, nothing made
anew behind the user's back (an empty database would pass for an empty district)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import CW, git

pytestmark = pytest.mark.sqlite_only  # the file of a SQLite district


def cw(repo: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CW, *args], cwd=repo, capture_output=True, text=True, timeout=60,
                          env={**os.environ, **env})  # fmt: skip


def one_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("cw: error: ")
    return line


@pytest.fixture
def district(make_repo: Callable[[str], Path]) -> Path:
    repo = make_repo("repo")
    assert cw(repo, "init").returncode == 0
    (repo / "plan.yaml").write_text("initiative: x\ntasks:\n  - {id: a, prompt: p}\n")
    assert cw(repo, "submit", "plan", "plan.yaml", "--no-dispatch").returncode == 0
    return repo


def test_a_missing_or_empty_database_is_not_made_anew(district: Path) -> None:
    database = district / ".cw" / "cw.db"
    database.write_bytes(b"")
    assert "cw.db is missing or empty" in one_line(cw(district, "task", "list"))
    assert database.read_bytes() == b""
    database.unlink()
    assert "`cw init` to start an empty district" in one_line(cw(district, "status"))
    assert not database.exists()
    health = cw(district, "server", "status")
    assert health.returncode == 1 and "database: NOT reachable" in health.stdout, health.stdout
    assert not database.exists(), "asking whether it answers made it"
    assert cw(district, "init").returncode == 0, "cw init makes it, when asked"
    assert database.stat().st_size > 0


def test_a_damaged_database_is_one_line_and_left_as_it_is(district: Path) -> None:
    database = district / ".cw" / "cw.db"
    damaged = os.urandom(10_000)
    database.write_bytes(damaged)
    for args in (["task", "list"], ["status"], ["submit", "plan", "plan.yaml"]):
        assert "file is not a database" in one_line(cw(district, *args))
    assert database.read_bytes() == damaged


def test_a_database_of_an_unknown_schema_is_one_line(district: Path) -> None:
    database = district / ".cw" / "cw.db"
    subprocess.run(["sqlite3", str(database), "UPDATE alembic_version SET version_num='9999'"],
                   check=True)  # fmt: skip
    assert "'9999'" in one_line(cw(district, "task", "list"))


def test_a_config_file_that_cannot_be_read_is_not_taken_for_the_defaults(district: Path) -> None:
    config = district / ".cw" / "config.toml"
    config.unlink()
    config.mkdir()
    assert "config.toml: cannot be read" in one_line(cw(district, "status"))


def test_init_where_a_file_is_in_the_way_makes_nothing(make_repo: Callable[[str], Path]) -> None:
    repo = make_repo("repo")
    (repo / ".cw").write_text("not a folder\n")
    assert ".cw is in the way" in one_line(cw(repo, "init"))
    assert git(repo, "branch", "--list", "cw/integration") == ""


def test_cw_repo_naming_a_subfolder_is_refused_not_made_a_district(district: Path) -> None:
    sub = district / "src"
    sub.mkdir()
    for args in (["status"], ["init"]):
        said = one_line(cw(district, *args, CW_REPO=str(sub)))
        assert "is not the top of a git working tree" in said
    assert not (sub / ".cw").exists()
