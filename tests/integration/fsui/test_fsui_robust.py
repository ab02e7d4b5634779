"""The file UI against what goes wrong: odd names, YAML it cannot read, a busy database,
late commits and rows that go away. Real files, a real database, the real watcher."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update
from sqlalchemy.exc import OperationalError

from cw.fsui import cursor, edits, mirror, watcher
from cw.store.models import Event
from cw.store.snapshot import Snapshot
from tests.conftest import dump_store
from tests.factories import spec
from tests.integration.fsui.test_fsui import Mirrored, ask, edit, fields, mirrored, wait_for

__all__ = ["mirrored"]  # the fixture, shared with test_fsui

BUSY = OperationalError("UPDATE tasks", {}, sqlite3.OperationalError("database is locked"))


def fail_once(monkeypatch: pytest.MonkeyPatch, module: object, name: str) -> list[str]:
    """``module.name`` raises BUSY the first time it is called; the list says it did."""
    real: Callable[..., Any] = getattr(module, name)
    failed: list[str] = []

    def flaky(*args: Any, **kwargs: Any) -> Any:
        if not failed:
            failed.append(name)
            raise BUSY
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, flaky)
    return failed


def test_a_task_key_ending_in_answer_is_not_taken_for_an_answer_file(
    mirrored: Callable[..., Mirrored],
) -> None:
    m = mirrored({"q.answer": []})
    (question,) = ask(m.store, m.id("q.answer"), "Go on?")
    m.start()
    path = m.message_file(question)
    assert path.name == f"{question}-q.answer.md"
    assert m.store.message_detail(question)["state"] == "pending"
    assert path.is_file() and m.kept() == []
    edit(path, 'answer: ""', "answer: go on")
    wait_for(lambda: m.store.message_detail(question)["answer"] == "go on", "the real answer")
    wait_for(lambda: fields(path)["state"] == "answered", "the file to follow")
    m.halt()


def test_a_file_whose_name_is_not_utf8_is_left_alone(mirrored: Callable[..., Mirrored]) -> None:
    m = mirrored({"a": []})
    (question,) = ask(m.store, m.id("a"), "Go on?")
    m.start()
    odd = os.fsencode(m.root / "messages") + b"/%d-\xff.answer.md" % question
    with open(odd, "wb") as handle:
        handle.write(b"yes\n")
    edit(m.message_file(question), 'answer: ""', "answer: go on")
    wait_for(lambda: m.store.message_detail(question)["answer"] == "go on", "the answer")
    assert os.path.exists(odd) and m.kept() == []
    m.halt()


@pytest.mark.parametrize(
    ("old", "new", "why"),
    [('answer: ""', "answer: &x [*x]", "holds a list or a mapping"),
     ('answer: ""', "answer: " + "[" * 600 + "]" * 600, "holds a list or a mapping"),
     ("revision:", "revision: !!int abc", "made against revision abc"),
     ("revision:", "revision: 2025-06-31", "against revision 2025-06-31")],
    ids=["self-alias", "600-deep", "bad-tags", "bad-date"],
)  # fmt: skip
def test_yaml_the_watcher_cannot_read_is_kept_aside_and_the_watcher_goes_on(
    mirrored: Callable[..., Mirrored], old: str, new: str, why: str
) -> None:
    m = mirrored({"a": []})
    (question,) = ask(m.store, m.id("a"), "Go on?")
    m.start()
    path = m.message_file(question)
    before = dump_store(m.settings.db_url)
    if old == "revision:":  # the whole line, whatever revision it says, and an answer
        text = path.read_text().replace('answer: ""\n', "")
        old = next(line for line in text.splitlines() if line.startswith(old))
        path.write_text(text.replace(old, new + '\nanswer: "yes"'))
    else:
        edit(path, old, new)
    wait_for(lambda: len(m.kept()) == 1, "the edit to be kept aside")
    assert why in m.kept()[0].read_text()
    # Read as text: YAML itself cannot read the edit, which is there until it is rewritten.
    wait_for(lambda: '\nanswer: ""\n' in path.read_text(), "the file to be written again")
    assert dump_store(m.settings.db_url) == before, "the database is unchanged"
    edit(path, 'answer: ""', "answer: 3.10")
    wait_for(lambda: m.store.message_detail(question)["state"] == "answered", "the next edit")
    assert m.store.message_detail(question)["answer"] == "3.10", "as typed"
    m.halt()


def test_an_edit_applied_whose_file_failed_to_render_is_not_taken_for_an_edit_again(
    mirrored: Callable[..., Mirrored], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The database was busy as the file of an edit just applied was rendered again: the next
    try read the person's file as a new edit, found nothing changed and kept it aside as
    refused, although it had been applied."""
    m = mirrored({"a": []})
    m.start()
    a = m.task_file("a")
    revision = fields(a)["revision"]
    real = mirror.task_doc
    rendering: list[str] = []

    def busy_once_applied(row: Any) -> Any:  # the render that follows the edit applied
        if row.priority == 3 and not rendering:
            rendering.append("task_doc")
            raise BUSY
        return real(row)

    monkeypatch.setattr(mirror, "task_doc", busy_once_applied)
    edit(a, "priority: 0", "priority: 3")
    wait_for(lambda: m.store.task_detail(m.id("a"))["priority"] == 3, "the edit")
    wait_for(lambda: fields(a)["revision"] != revision, "a's file, rendered again")
    assert rendering, "the render failed once"
    assert fields(a)["priority"] == 3
    assert m.kept() == []
    m.halt()


def test_a_busy_database_while_applying_or_rendering_loses_nothing(
    mirrored: Callable[..., Mirrored], monkeypatch: pytest.MonkeyPatch
) -> None:
    m = mirrored({"a": [], "b": []})
    m.start()
    a, b = m.task_file("a"), m.task_file("b")
    applying = fail_once(monkeypatch, edits, "apply")
    edit(a, "priority: 0", "priority: 3")
    wait_for(lambda: m.store.task_detail(m.id("a"))["priority"] == 3, "the edit, tried again")
    wait_for(lambda: fields(a)["priority"] == 3, "a's file")
    rendering = fail_once(monkeypatch, mirror, "task_doc")
    m.store.edit_task(m.id("b"), priority=5)
    wait_for(lambda: fields(b)["priority"] == 5, "the change, rendered again")
    assert applying and rendering, "each failed once"
    assert m.kept() == []
    m.halt()


def _move_events(m: Mirrored, ids: list[int], to: int) -> None:
    """Give these events the ids from ``to`` on, as if they had taken them (and committed
    late) or left them to transactions not committed yet."""
    with m.store.engine.begin() as conn:
        for n, event_id in enumerate(ids):
            conn.execute(update(Event).where(Event.id == event_id).values(id=to + n))


def _events_after(m: Mirrored, event_id: int) -> list[int]:
    with m.store.engine.connect() as conn:
        return list(conn.scalars(select(Event.id).where(Event.id > event_id).order_by(Event.id)))


def test_an_event_committed_after_a_later_one_was_read_is_not_skipped(
    mirrored: Callable[..., Mirrored],
) -> None:
    """PostgreSQL takes an event's id at insert: id N can commit after N+1 was read."""
    m = mirrored({"a": [], "b": []})
    w = watcher.Watcher(m.settings, m.store)
    w.sync_all()
    first = Snapshot(m.store.engine).last_event_id()
    m.store.edit_task(m.id("a"), priority=1)
    _move_events(m, _events_after(m, first), first + 100)  # ids below left to late commits
    assert w.follow()
    assert fields(m.task_file("a"))["priority"] == 1
    read = _events_after(m, first)
    m.store.edit_task(m.id("b"), priority=2)
    late = [i for i in _events_after(m, first) if i not in read]
    assert late
    _move_events(m, late, first + 50)  # committed now, with an id taken long before
    assert w.follow(), "the late event is read"
    assert fields(m.task_file("b"))["priority"] == 2
    assert not w.follow(), "and read once"


def test_a_task_a_resubmit_drops_loses_its_file_and_an_edit_of_it_is_kept_aside(
    mirrored: Callable[..., Mirrored],
) -> None:
    m = mirrored({"a": [], "b": [], "c": []})
    w = watcher.Watcher(m.settings, m.store)
    w.sync_all()
    b, c = m.task_file("b"), m.task_file("c")
    c_id = m.id("c")
    edit(c, "priority: 0", "priority: 4")  # a person's edit, not read yet
    m.store.submit(spec({"a": []}))
    assert w.follow()
    assert not b.exists(), "the file of a task gone goes too"
    assert not c.exists()
    (kept,) = m.kept()
    assert f"task {c_id} is no longer in the district" in kept.read_text()
    assert "priority: 4" in kept.read_text()
    c.write_text(kept.read_text())  # an editor that still had it open saves it again
    w.notice(str(c))
    w.pending.wait(0)
    w.settle(force=True)
    assert not c.exists() and len(m.kept()) == 2
    assert all("is no longer in the district" in p.read_text() for p in m.kept())
    assert fields(m.task_file("a"))["task"] == "a"


def test_names_too_long_in_bytes_are_cut_to_fit(mirrored: Callable[..., Mirrored]) -> None:
    m = mirrored()
    key = "\U00020000" * 64  # four bytes each: 256
    m.store.submit(spec({key: []}, name="漢字" * 60))
    m.start()
    path = m.task_file(key)
    assert path.is_file()
    assert all(len(os.fsencode(part)) <= 130 for part in path.relative_to(m.root).parts)
    path.write_text("not a frontmatter\n")
    wait_for(lambda: len(m.kept()) == 1, "the edit to be kept aside")
    m.store.submit(spec({"b": []}, name="\U00020000" * 80))  # a new folder, made whole
    wait_for(lambda: m.task_file("b").is_file(), "the new initiative's file")
    assert all(len(os.fsencode(p.name)) <= 255 for p in Path(m.root).rglob("*"))
    m.halt()


def test_an_id_never_committed_is_looked_for_a_while_and_again_at_the_start(
    mirrored: Callable[..., Mirrored], monkeypatch: pytest.MonkeyPatch
) -> None:
    m = mirrored({"a": []})
    w = watcher.Watcher(m.settings, m.store)
    w.sync_all()
    first = Snapshot(m.store.engine).last_event_id()
    m.store.edit_task(m.id("a"), priority=1)
    _move_events(m, _events_after(m, first), first + 5)  # 4 ids rolled back, say
    again = watcher.Watcher(m.settings, m.store)
    again.sync_all()
    assert again.events.gaps == list(range(first + 1, first + 5)), "a start looks for them too"
    monkeypatch.setattr(cursor, "GAP_SECONDS", 0.0)
    assert w.follow()
    assert w.events.gaps == list(range(first + 1, first + 5))
    assert not w.follow()
    assert w.events.gaps == [], "given up"
