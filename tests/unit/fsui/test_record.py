"""The record of what cw wrote: one line per change, replayed after a restart, folded into
the JSON when it grows; a line cut short by a crash loses nothing before it."""

from __future__ import annotations

import json
from pathlib import Path

from cw.fsui.record import Record


def loaded(path: Path) -> Record:
    record = Record(path)
    record.load()
    return record


def test_changes_are_appended_and_read_back_after_a_restart(tmp_path: Path) -> None:
    record = loaded(tmp_path / "state.json")
    for i in range(3):
        record.expect(f"f{i}.md", f"h{i}")
    record.save()
    record.expect("f0.md", "h0b")
    record.forget("f1.md")
    record.save()
    assert not (tmp_path / "state.json").exists(), "a few changes only append"
    assert len((tmp_path / "state.log").read_text().splitlines()) == 5
    again = loaded(tmp_path / "state.json")
    assert again.known == {"f0.md": ["h0", "h0b"], "f2.md": ["h2"]}
    assert not (tmp_path / "state.log").exists(), "folded into the JSON at the start"
    assert json.loads((tmp_path / "state.json").read_text())["files"] == again.known


def test_a_line_cut_short_by_a_crash_ends_the_log(tmp_path: Path) -> None:
    record = loaded(tmp_path / "state.json")
    record.expect("a.md", "h1")
    record.save()
    with (tmp_path / "state.log").open("a") as log:
        log.write('["b.md", "h')
    again = loaded(tmp_path / "state.json")
    assert again.known == {"a.md": ["h1"]}
    again.expect("c.md", "h3")
    again.save()
    assert loaded(tmp_path / "state.json").known == {"a.md": ["h1"], "c.md": ["h3"]}


def test_the_log_is_folded_into_the_json_once_as_long_as_the_record(tmp_path: Path) -> None:
    record = loaded(tmp_path / "state.json")
    for i in range(2000):
        record.expect(f"f{i}.md", "h")
    record.save()
    assert not (tmp_path / "state.log").exists(), "a whole render goes into the JSON"
    for n in range(1999):
        record.expect("f0.md", f"h{n}")
        record.save()
    assert len((tmp_path / "state.log").read_text().splitlines()) == 1999
    record.expect("f0.md", "last")
    record.save()
    assert not (tmp_path / "state.log").exists()
    assert loaded(tmp_path / "state.json").known["f0.md"] == ["h1998", "last"]
