"""cw.git.integrity against real merges in real git repositories in tmp_path."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from cw.errors import GitError
from cw.git import kept
from cw.git.integrity import DroppedLine, dropped_lines, merge_base
from tests.conftest import git

Files = dict[str, str | bytes | None]  # None deletes the file

TEN = "".join(f"line {n}\n" for n in range(1, 11))


@pytest.fixture(autouse=True)
def hermetic_git(monkeypatch: pytest.MonkeyPatch) -> None:
    """The developer's git configuration (rerere, merge drivers) plays no part."""
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", os.devnull)
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")


@dataclass(frozen=True)
class Sides:
    repo: Path
    base: str
    ours: str
    theirs: str

    def merge(self, *options: str) -> str:
        """Merge theirs into ours as git does, and return the result's sha."""
        git(self.repo, "checkout", "-q", "--detach", self.ours)
        git(self.repo, "merge", "-q", "--no-edit", *options, self.theirs)
        return git(self.repo, "rev-parse", "HEAD")

    def craft(self, files: Files) -> str:
        """A hand-made "resolution": ours with ``files`` changed."""
        git(self.repo, "checkout", "-q", "--detach", self.ours)
        return commit(self.repo, files, "resolution")

    def dropped(self, result: str, limit: int = 20) -> list[DroppedLine]:
        return dropped_lines(self.repo, self.base, self.ours, self.theirs, result, limit)


def commit(repo: Path, files: Files, message: str) -> str:
    for name, content in files.items():
        path = repo / name
        if content is None:
            path.unlink()
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "--allow-empty", "-m", message)
    return git(repo, "rev-parse", "HEAD")


MakeSides = Callable[[Files, Files, Files], Sides]


@pytest.fixture
def sides(tmp_path: Path) -> MakeSides:
    """``sides(base_files, ours_files, theirs_files)``: two branches forked from one base."""

    def make(base_files: Files, ours_files: Files, theirs_files: Files) -> Sides:
        repo = tmp_path / "repo"
        repo.mkdir()
        git(repo, "init", "-q", "-b", "main")
        base = commit(repo, base_files, "base")
        ours = commit(repo, ours_files, "ours")
        git(repo, "checkout", "-q", "--detach", base)
        theirs = commit(repo, theirs_files, "theirs")
        return Sides(repo, base, ours, theirs)

    return make


def with_lines(text: str, after: str, *new: str) -> str:
    """``text`` with ``new`` lines inserted after the line ``after``."""
    lines = text.splitlines(keepends=True)
    at = lines.index(f"{after}\n") + 1
    return "".join([*lines[:at], *(f"{line}\n" for line in new), *lines[at:]])


def test_a_clean_merge_of_edits_to_different_parts_of_a_file_drops_nothing(
    sides: MakeSides,
) -> None:
    s = sides(
        {"app.py": TEN},
        {"app.py": with_lines(TEN, "line 1", "ours one", "ours two")},
        {"app.py": with_lines(TEN, "line 9", "theirs one").replace("line 3\n", "line three\n")},
    )
    result = s.merge()
    assert "theirs one" in (s.repo / "app.py").read_text()
    assert s.dropped(result) == []


def test_a_union_merge_of_lines_appended_at_the_same_place_drops_nothing(sides: MakeSides) -> None:
    log = "# Changes\n\n- first\n"
    s = sides(
        {"CHANGELOG.md": log},
        {"CHANGELOG.md": log + "- ours\n"},
        {"CHANGELOG.md": log + "- theirs\n"},
    )
    (s.repo / ".git" / "info" / "attributes").write_text("CHANGELOG.md merge=union\n")
    result = s.merge()
    assert (s.repo / "CHANGELOG.md").read_text() == log + "- ours\n- theirs\n"
    assert s.dropped(result) == []


def test_a_resolution_keeping_only_one_side_reports_the_other_sides_added_lines(
    sides: MakeSides,
) -> None:
    s = sides(
        {"app.py": TEN},
        {"app.py": with_lines(TEN, "line 5", "ours kept")},
        {"app.py": with_lines(TEN, "line 5", "theirs lost", "theirs lost too")},
    )
    result = s.merge("-X", "ours")
    assert s.dropped(result) == [
        DroppedLine("app.py", "theirs", "theirs lost"),
        DroppedLine("app.py", "theirs", "theirs lost too"),
    ]


def test_a_hand_made_resolution_dropping_our_line_reports_it_as_ours(sides: MakeSides) -> None:
    s = sides(
        {"app.py": TEN},
        {"app.py": with_lines(TEN, "line 2", "ours lost")},
        {"app.py": with_lines(TEN, "line 8", "theirs kept")},
    )
    result = s.craft({"app.py": with_lines(TEN, "line 8", "theirs kept")})
    assert s.dropped(result) == [DroppedLine("app.py", "ours", "ours lost")]


def test_a_line_one_side_deleted_and_the_other_left_alone_is_not_reported(sides: MakeSides) -> None:
    s = sides(
        {"app.py": TEN},
        {"app.py": TEN.replace("line 3\n", "")},
        {"app.py": with_lines(TEN, "line 9", "theirs")},
    )
    result = s.merge()
    assert "line 3\n" not in (s.repo / "app.py").read_text()
    assert s.dropped(result) == []


def test_a_line_moved_by_one_side_and_deleted_by_the_other_is_not_reported(
    sides: MakeSides,
) -> None:
    moved = with_lines(TEN.replace("line 3\n", ""), "line 9", "line 3")
    s = sides({"app.py": TEN}, {"app.py": TEN.replace("line 3\n", "")}, {"app.py": moved})
    result = s.craft({"app.py": TEN.replace("line 3\n", "")})
    assert s.dropped(result) == []


def test_a_dropped_line_is_reported_though_the_base_has_copies_of_it(sides: MakeSides) -> None:
    code = "def a():\n    return None\n\n\ndef b():\n    return None\n"
    added = code + "\n\ndef c():\n    return None\n"
    s = sides({"app.py": code}, {"app.py": "# ours\n" + code}, {"app.py": added})
    result = s.craft({"app.py": "# ours\n" + code + "\n\ndef c():\n"})
    assert s.dropped(result) == [DroppedLine("app.py", "theirs", "    return None")]


def test_a_line_added_twice_but_present_once_is_dropped_once(sides: MakeSides) -> None:
    s = sides(
        {"app.py": TEN},
        {"app.py": with_lines(TEN, "line 1", "ours")},
        {"app.py": with_lines(with_lines(TEN, "line 4", "twice"), "line 7", "twice")},
    )
    result = s.craft({"app.py": with_lines(with_lines(TEN, "line 1", "ours"), "line 4", "twice")})
    assert s.dropped(result) == [DroppedLine("app.py", "theirs", "twice")]


def test_whitespace_only_added_lines_are_ignored(sides: MakeSides) -> None:
    s = sides(
        {"app.py": TEN},
        {"app.py": with_lines(TEN, "line 1", "ours")},
        {"app.py": with_lines(TEN, "line 6", "", "    ", "\t")},
    )
    result = s.craft({"app.py": with_lines(TEN, "line 1", "ours")})
    assert s.dropped(result) == []


def test_a_file_the_result_deleted_though_a_side_added_lines_is_reported(sides: MakeSides) -> None:
    s = sides(
        {"app.py": TEN, "keep.txt": "keep\n"},
        {"app.py": with_lines(TEN, "line 1", "ours")},
        {"app.py": with_lines(TEN, "line 9", "theirs", "   ")},
    )
    result = s.craft({"app.py": None})
    assert s.dropped(result) == [
        DroppedLine("app.py", "ours", "ours"),
        DroppedLine("app.py", "theirs", "theirs"),
    ]


def test_a_file_deleted_by_the_other_side_may_be_deleted_in_the_result(sides: MakeSides) -> None:
    s = sides(
        {"app.py": TEN, "keep.txt": "keep\n"},
        {"app.py": None},
        {"app.py": with_lines(TEN, "line 9", "theirs")},
    )
    result = s.craft({})
    assert s.dropped(result) == []


def test_a_rename_on_one_side_is_followed_to_the_other_sides_added_line(sides: MakeSides) -> None:
    s = sides(
        {"old.py": TEN},
        {"old.py": None, "new.py": TEN},
        {"old.py": with_lines(TEN, "line 5", "theirs")},
    )
    result = s.merge()
    assert "theirs" in (s.repo / "new.py").read_text()
    assert s.dropped(result) == []
    lost = s.craft({"new.py": with_lines(TEN, "line 5", "changed")})
    assert s.dropped(lost) == [DroppedLine("new.py", "theirs", "theirs")]


def test_a_binary_file_is_skipped_without_error(
    sides: MakeSides, caplog: pytest.LogCaptureFixture
) -> None:
    blob = bytes(range(256)) * 4
    s = sides(
        {"image.bin": blob, "app.py": TEN},
        {"image.bin": blob + b"\0ours", "app.py": with_lines(TEN, "line 1", "ours")},
        {"image.bin": blob + b"\0theirs"},
    )
    result = s.merge("-X", "ours")
    with caplog.at_level(logging.WARNING, logger="cw.git.integrity"):
        assert s.dropped(result) == []
    assert "image.bin" in caplog.text


def test_at_most_limit_lines_are_reported(sides: MakeSides) -> None:
    many = [f"theirs {n}" for n in range(30)]
    s = sides(
        {"app.py": TEN},
        {"app.py": with_lines(TEN, "line 1", "ours")},
        {"app.py": with_lines(TEN, "line 9", *many)},
    )
    result = s.craft({"app.py": with_lines(TEN, "line 1", "ours")})
    assert [d.line for d in s.dropped(result, limit=5)] == many[:5]
    assert len(s.dropped(result)) == 20


def test_merge_base_is_the_common_ancestor_or_none_for_unrelated_histories(
    sides: MakeSides,
) -> None:
    s = sides({"app.py": TEN}, {"a.txt": "a\n"}, {"b.txt": "b\n"})
    assert merge_base(s.repo, s.ours, s.theirs) == s.base
    git(s.repo, "checkout", "-q", "--orphan", "other")
    unrelated = commit(s.repo, {"c.txt": "c\n"}, "unrelated")
    assert merge_base(s.repo, s.ours, unrelated) is None
    with pytest.raises(GitError):
        merge_base(s.repo, s.ours, "no-such-ref")


def test_the_same_line_added_by_both_sides_and_merged_into_one_is_not_reported(
    sides: MakeSides,
) -> None:
    both = with_lines(TEN, "line 5", "import os")
    s = sides({"app.py": TEN}, {"app.py": both}, {"app.py": with_lines(both, "line 9", "theirs")})
    result = s.merge()
    assert (s.repo / "app.py").read_text().count("import os") == 1
    assert s.dropped(result) == []


def test_the_kept_object_reader_is_replaced_when_its_process_has_ended(sides: MakeSides) -> None:
    s = sides(
        {"app.py": TEN},
        {"app.py": with_lines(TEN, "line 5", "ours kept")},
        {"app.py": with_lines(TEN, "line 5", "theirs lost")},
    )
    result = s.merge("-X", "ours")
    lost = [DroppedLine("app.py", "theirs", "theirs lost")]
    assert s.dropped(result) == lost
    reader = kept.object_reader(s.repo)  # the one that check used, kept
    for cmd in (reader.cat_file_all, reader.cat_file_header):
        assert cmd is not None and cmd.proc is not None
        cmd.proc.kill()
        cmd.proc.wait()
    assert s.dropped(result) == lost  # read through a new one, not taken for missing files
    assert kept.object_reader(s.repo) is not reader
