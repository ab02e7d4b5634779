"""The mirror's directory: atomic writes that never replace a person's file, links never
followed, big files never read, and cw's own writes recognised after a restart."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cw.errors import ConfigError
from cw.fsui.mirrordir import REJECTED_MARK, TEMP_PREFIX, Found, MirrorDir, read_entry


@pytest.fixture
def mdir(tmp_path: Path) -> MirrorDir:
    d = MirrorDir(tmp_path / "mirror", tmp_path / "state.json", max_bytes=1024)
    d.open()
    return d


def test_a_write_replaces_only_what_cw_wrote(mdir: MirrorDir) -> None:
    assert mdir.write("tasks/a.md", "one\n")
    assert mdir.write("tasks/a.md", "two\n")
    assert (mdir.root / "tasks/a.md").read_text() == "two\n"
    (mdir.root / "tasks/a.md").write_text("a person's edit\n")
    assert not mdir.write("tasks/a.md", "three\n"), "left for the caller to read first"
    assert (mdir.root / "tasks/a.md").read_text() == "a person's edit\n"
    assert mdir.write("tasks/a.md", "three\n", handled=b"a person's edit\n")
    assert (mdir.root / "tasks/a.md").read_text() == "three\n"
    assert not [p for p in (mdir.root / "tasks").iterdir() if p.name.startswith(TEMP_PREFIX)]


def test_what_cw_wrote_is_recognised_after_a_restart(mdir: MirrorDir, tmp_path: Path) -> None:
    mdir.write("a.md", "first\n")
    mdir.write("a.md", "second\n")
    mdir.save()
    again = MirrorDir(mdir.root, tmp_path / "state.json")
    again.open()
    assert again.is_ours("a.md", b"second\n") and again.is_latest("a.md", b"second\n")
    assert again.is_ours("a.md", b"first\n"), "a crash between state and file leaves either"
    assert not again.is_ours("a.md", b"edited\n")


def test_reads_never_follow_links_nor_read_big_files(mdir: MirrorDir, tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("secret\n")
    (mdir.root / "link.md").symlink_to(secret)
    assert mdir.read("link.md") == Found("link", source=mdir.root / "link.md", target=str(secret))
    with (mdir.root / "big.md").open("wb") as handle:
        handle.truncate(50 * 1024 * 1024)
    big = read_entry(mdir.root / "big.md", 1024)
    assert (big.kind, big.size, big.data) == ("oversize", 50 * 1024 * 1024, b"")


def test_a_linked_folder_is_moved_aside_before_anything_is_read_through_it(
    mdir: MirrorDir, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "a.md").write_text("not cw's\n")
    (mdir.root / "tasks").symlink_to(outside, target_is_directory=True)
    assert mdir.read("tasks/a.md").kind == "missing"
    assert (mdir.root / "tasks").is_dir() and not (mdir.root / "tasks").is_symlink()
    assert mdir.write("tasks/a.md", "cw's\n")
    assert (outside / "a.md").read_text() == "not cw's\n"
    (aside,) = [p for p in mdir.root.iterdir() if REJECTED_MARK in p.name]
    assert aside.is_symlink()


def test_a_refused_edit_is_kept_with_the_note_on_top(mdir: MirrorDir) -> None:
    mdir.write("m/1.md", "cw\n")
    text = mdir.keep_aside("m/1.md", "> why\n\n", Found("file", data=b"my answer\n"))
    assert text.read_text() == "> why\n\nmy answer\n" and text.name.startswith("1.rejected-")
    (mdir.root / "m/1.md").write_bytes(b"\x00garbage")
    note = mdir.keep_aside("m/1.md", "> binary\n\n", Found("file", data=b"\x00garbage"))
    (raw,) = [p for p in (mdir.root / "m").iterdir() if p.suffix not in (".md",)]
    assert raw.read_bytes() == b"\x00garbage" and raw.name in note.read_text()


def test_the_directory_may_not_be_a_link(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    os.symlink(tmp_path / "real", tmp_path / "mirror")
    with pytest.raises(ConfigError, match="symbolic link"):
        MirrorDir(tmp_path / "mirror", tmp_path / "state.json").open()


def test_missing_folders_are_found_once_each_by_the_topmost_one_missing(mdir: MirrorDir) -> None:
    (mdir.root / "tasks/a").mkdir(parents=True)
    (mdir.root / "agents").write_text("a file where a folder belongs\n")
    rels = ["STATUS.md", "tasks/a/x.md", "tasks/b/c/y.md", "tasks/b/z.md", "messages/1-m.md"]
    found = mdir.new_folders([*rels, "agents/w.md"])
    assert found == {"tasks/b": ["tasks/b/c/y.md", "tasks/b/z.md"], "messages": ["messages/1-m.md"]}


def test_a_new_folder_lands_whole_with_one_rename(mdir: MirrorDir) -> None:
    files = {f"tasks/p{i % 3}/t{i}.md": f"task {i}\n" for i in range(30)}
    assert mdir.write_folder("tasks", files)
    for rel, text in files.items():
        assert (mdir.root / rel).read_text() == text
    assert sorted(p.name for p in mdir.root.iterdir()) == ["tasks"], "no temporary folder left"


def test_a_new_folder_that_fails_halfway_leaves_nothing(mdir: MirrorDir) -> None:
    files = {"tasks/a.md": "one\n", "tasks/b": "a file\n", "tasks/b/c.md": "under a file\n"}
    with pytest.raises(OSError):
        mdir.write_folder("tasks", files)
    assert list(mdir.root.iterdir()) == [], "neither the folder nor its temporary one"


def test_a_folder_a_person_made_meanwhile_is_left_to_the_one_by_one_writes(
    mdir: MirrorDir,
) -> None:
    (mdir.root / "tasks").mkdir()
    (mdir.root / "tasks/notes.md").write_text("mine\n")
    assert not mdir.write_folder("tasks", {"tasks/a.md": "one\n"})
    assert [p.name for p in (mdir.root / "tasks").iterdir()] == ["notes.md"]
    assert [p.name for p in mdir.root.iterdir()] == ["tasks"]
    (mdir.root / "empty").mkdir()
    assert mdir.write_folder("empty", {"empty/a.md": "one\n"}), "an empty folder is replaced"
    assert (mdir.root / "empty/a.md").read_text() == "one\n"


def test_paths_inside_hidden_folders_are_ignored() -> None:
    assert MirrorDir.ignored(f"{TEMP_PREFIX}1-2-tasks/p/t.md")
    assert MirrorDir.ignored(f"tasks/{TEMP_PREFIX}1-2-p/t.md")
    assert MirrorDir.ignored("tasks/.git/x.md") and MirrorDir.ignored("tasks/.swp")
    assert not MirrorDir.ignored("tasks/p/t.md")


def test_a_folder_holding_somebodys_files_is_refused_and_left_as_it_is(tmp_path: Path) -> None:
    """cw would set them aside as `.rejected` and hide the folder from git."""
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "README.md").write_text("notes\n")
    with pytest.raises(ConfigError, match="holds files cw did not write"):
        MirrorDir(mine, tmp_path / "state.json").open()
    assert [p.name for p in mine.iterdir()] == ["README.md"]
    assert not (tmp_path / "state.json").exists()


def test_a_folder_cw_made_is_its_own_after_a_restart(mdir: MirrorDir, tmp_path: Path) -> None:
    """The record is kept from the first open on: a watcher killed before it wrote one
    finds its files its own."""
    (mdir.root / "STATUS.md").write_text("written before a kill\n")
    MirrorDir(mdir.root, mdir.state_file).open()


def test_an_edit_whose_name_is_not_utf8_is_kept_aside_all_the_same(mdir: MirrorDir) -> None:
    folder = os.fsencode(mdir.root / "messages")
    os.makedirs(folder)
    with open(os.path.join(folder, b"7-\xff.md"), "wb") as handle:
        handle.write(b"my answer\n")
    rel = "messages/" + os.fsdecode(b"7-\xff.md")
    found = mdir.read(rel)
    kept = mdir.keep_aside(rel, f"> cw did not apply this edit of `{rel}`\n\n", found)
    text = kept.read_bytes().decode("utf-8")
    assert "`messages/7-?.md`" in text and text.endswith("my answer\n")
    assert os.fsencode(kept.name).startswith(b"7-\xff" + REJECTED_MARK.encode())
