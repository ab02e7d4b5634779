"""Receipts: the fingerprint of a ``.planning`` directory changes with anything reading it
could see, and a receipt is found only while its racy files still hold what they held."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from cw.plans import receipt as receipts_module
from cw.plans.receipt import KEEP, Fingerprint, Receipts, fingerprint

OPTIONS = "lenient=False strict=False"


@pytest.fixture
def planning(tmp_path: Path) -> Path:
    folder = tmp_path / "repo" / ".planning" / "phases" / "01-core"
    folder.mkdir(parents=True)
    (folder / "01-01-PLAN.md").write_text("---\nphase: 01\nplan: 01\n---\nMake it.\n")
    return tmp_path / "repo" / ".planning"


def printed(planning: Path) -> Fingerprint:
    found = fingerprint(planning, OPTIONS)
    assert found is not None
    return found


def test_the_same_files_give_the_same_key_from_the_directory_or_the_one_holding_it(
    planning: Path,
) -> None:
    assert printed(planning).key == printed(planning).key == printed(planning.parent).key
    assert fingerprint(planning, "lenient=True strict=False") != printed(planning)


@pytest.mark.parametrize("change", ["add", "remove", "rename", "rewrite", "mkdir"])
def test_any_change_reading_could_see_changes_the_key(planning: Path, change: str) -> None:
    plan = planning / "phases" / "01-core" / "01-01-PLAN.md"
    before = printed(planning).key
    if change == "add":
        (plan.parent / "01-02-PLAN.md").write_text("---\nphase: 01\nplan: 02\n---\nMore.\n")
    elif change == "remove":
        plan.unlink()
    elif change == "rename":
        plan.rename(plan.with_name("01-03-PLAN.md"))
    elif change == "rewrite":  # the same size and modification time
        times = plan.stat()
        plan.write_text(plan.read_text().replace("Make", "Mock"))
        os.utime(plan, ns=(times.st_atime_ns, times.st_mtime_ns))
    else:
        (planning / "phases" / "02-api").mkdir()
    assert printed(planning).key != before


def test_no_fingerprint_for_what_is_not_a_planning_directory_or_holds_a_link(
    planning: Path, tmp_path: Path
) -> None:
    assert fingerprint(tmp_path / "nowhere", OPTIONS) is None
    assert fingerprint(planning / "phases" / "01-core" / "01-01-PLAN.md", OPTIONS) is None
    (planning / "STATE.md").symlink_to(tmp_path)
    assert fingerprint(planning, OPTIONS) is None


def test_files_changed_in_the_last_second_are_racy_and_checked_by_content(
    planning: Path, tmp_path: Path
) -> None:
    files = printed(planning)
    assert "phases/01-core/01-01-PLAN.md" in files.racy  # just written
    receipts = Receipts(tmp_path / "receipts.json")
    receipts.keep(files, "repo", 1, 3, ["cw: nothing new"])
    found = receipts.find(files)
    assert found is not None and (found.revision, found.lines) == (3, ["cw: nothing new"])

    plan = planning / "phases" / "01-core" / "01-01-PLAN.md"
    plan.write_text(plan.read_text().replace("Make", "Mock"))  # as if stat could not tell
    assert receipts.find(files) is None


def test_files_older_than_a_second_are_told_by_their_stat_alone(
    planning: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(receipts_module, "YOUNG_NS", 0)
    assert printed(planning).racy == {}


def test_receipts_keep_the_newest_and_a_damaged_file_holds_none(
    planning: Path, tmp_path: Path
) -> None:
    receipts = Receipts(tmp_path / "receipts.json")
    files = printed(planning)
    for n in range(KEEP + 2):
        receipts.keep(Fingerprint(planning, f"key{n}", {}), "repo", 1, n, [])
    receipts.keep(files, "repo", 1, 99, [])
    kept = json.loads((tmp_path / "receipts.json").read_text())
    assert len(kept) == KEEP and next(iter(kept)) == files.key and "key0" not in kept
    for damaged in ("{", json.dumps({files.key: {"revision": 1}}), "[]"):
        (tmp_path / "receipts.json").write_text(damaged)
        assert receipts.find(files) is None
