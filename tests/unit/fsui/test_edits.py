"""Reading a person's edit of a mirrored file: one intent, or a refusal that says why."""

from __future__ import annotations

import pytest

from cw.fsui import edits, mirror
from cw.fsui.edits import EditRefused, Intent
from cw.fsui.mirror import Ref
from cw.fsui.mirrordir import Found
from tests.unit.fsui.test_mirror import message_row, task_row

TASK = Ref("task", 7)
MESSAGE = Ref("message", 3)


def edited(text: str, old: str, new: str) -> str:
    assert old in text, old
    return text.replace(old, new, 1)


def test_a_new_priority_and_prompt_become_one_edit() -> None:
    row = task_row()
    text = mirror.task_doc(row).text
    text = edited(edited(text, "priority: 0", "priority: 5"), "do the thing\n", "do more\n\n")
    assert edits.read(TASK, text, row) == Intent(TASK, "edit", prompt="do more", priority=5)


@pytest.mark.parametrize("action", ["cancel", "retry", "Cancel "])
def test_an_action_is_read_on_its_own(action: str) -> None:
    row = task_row()
    text = edited(mirror.task_doc(row).text, "action: none", f"action: {action}")
    assert edits.read(TASK, text, row) == Intent(TASK, action.strip().lower())


def test_an_action_with_other_changes_is_refused() -> None:
    row = task_row()
    text = edited(mirror.task_doc(row).text, "action: none", "action: cancel")
    with pytest.raises(EditRefused, match="one thing at a time"):
        edits.read(TASK, edited(text, "priority: 0", "priority: 2"), row)


@pytest.mark.parametrize(
    ("old", "new", "why"),
    [("action: none", "action: delete", "not one of none, cancel, retry"),
     ("priority: 0", "priority: high", "not a whole number"),
     ("priority: 0", "priority: true", "not a whole number"),
     ("priority: 0", "priority: 99999999999999999999999", "out of range"),
     ("priority: 0", "priority: -2147483649", "out of range"),
     ("task: build", "task: [unclosed", "not valid YAML"),
     ("---\ntask", "task", "frontmatter block"),
     ("revision: ", "old_revision: ", "revision:` is missing")],
)  # fmt: skip
def test_an_edit_that_does_not_parse_is_refused_with_the_reason(
    old: str, new: str, why: str
) -> None:
    row = task_row()
    text = edited(edited(mirror.task_doc(row).text, "do the thing", "do more"), old, new)
    with pytest.raises(EditRefused, match=why.replace("[", r"\[")):
        edits.read(TASK, text, row)


def test_an_edit_against_an_older_revision_is_refused() -> None:
    text = edited(mirror.task_doc(task_row()).text, "priority: 0", "priority: 5")
    with pytest.raises(EditRefused, match="database has changed since"):
        edits.read(TASK, text, task_row(state="ready"))


def test_an_edit_of_nothing_editable_is_refused() -> None:
    row = task_row()
    text = edited(mirror.task_doc(row).text, "# Task build", "# My notes\n\n# Task build")
    with pytest.raises(EditRefused, match="nothing editable changed"):
        edits.read(TASK, text, row)


@pytest.mark.parametrize(
    ("old", "new", "answer"),
    [('answer: ""', "answer: postgres", "postgres"),
     ('answer: ""', "answer: yes", "yes"),
     ('answer: ""', "answer: [a, b]", "a, b"),
     ("## Answer\n", "## Answer\n\nPostgres,\nwith a pool.\n\n", "Postgres,\nwith a pool.")],
)  # fmt: skip
def test_an_answer_is_read_from_the_frontmatter_or_under_its_heading(
    old: str, new: str, answer: str
) -> None:
    row = message_row()
    text = edited(mirror.message_doc(row).text, old, new)
    assert edits.read(MESSAGE, text, row) == Intent(MESSAGE, "answer", answer=answer)


def test_two_different_answers_are_refused() -> None:
    row = message_row()
    text = edited(mirror.message_doc(row).text, 'answer: ""', "answer: a")
    with pytest.raises(EditRefused, match="say different things"):
        edits.read(MESSAGE, edited(text, "## Answer\n", "## Answer\nb\n"), row)


def test_generated_files_cannot_be_edited() -> None:
    with pytest.raises(EditRefused, match="written by cw"):
        edits.read(Ref("agent", 1), "anything", None)


@pytest.mark.parametrize(
    ("found", "why"),
    [(Found("link", target="/etc/passwd"), "symbolic link"),
     (Found("oversize", size=50_000_000), "50,000,000 bytes"),
     (Found("other"), "not a regular file"),
     (Found("file", data=b"\x00\x01garbage"), "not text"),
     (Found("file", data=b"\xff\xfe\xfa"), "not text")],
)  # fmt: skip
def test_what_is_not_text_is_refused_before_parsing(found: Found, why: str) -> None:
    with pytest.raises(EditRefused, match=why):
        edits.text_of(found, 1024)


def test_the_note_says_which_file_and_why() -> None:
    note = edits.note("tasks/a.md", "first line\nsecond line")
    assert "`tasks/a.md`" in note and "> first line\n> second line" in note


@pytest.mark.parametrize(
    "typed",
    ["3.10", "12:30", "010", "0x1F", "on", "2025-06-31", "2025-06-30", "1_000", "!!int abc",
     "!!timestamp abc", "!!float 3.10", "null-ish"],
)  # fmt: skip
def test_an_answer_is_the_text_typed_not_yamls_reading_of_it(typed: str) -> None:
    row = message_row()
    text = edited(mirror.message_doc(row).text, 'answer: ""', f"answer: {typed}")
    expected = typed.split(" ", 1)[1] if typed.startswith("!!") else typed
    assert edits.read(MESSAGE, text, row) == Intent(MESSAGE, "answer", answer=expected)


@pytest.mark.parametrize(
    ("typed", "answer"),
    [('"3.10"', "3.10"), ("'on'", "on"), ('"a: b"', "a: b"), ("[3.10, on]", "3.10, on"),
     ("|\n  12:30\n  and then 010", "12:30\nand then 010")],
)  # fmt: skip
def test_a_quoted_or_listed_answer_keeps_its_text(typed: str, answer: str) -> None:
    row = message_row()
    text = edited(mirror.message_doc(row).text, 'answer: ""', f"answer: {typed}")
    assert edits.read(MESSAGE, text, row) == Intent(MESSAGE, "answer", answer=answer)


def test_feedback_is_the_text_typed() -> None:
    row = task_row(state="review")
    text = edited(mirror.task_doc(row).text, "action: none", "action: reject")
    text = edited(text, 'feedback: ""', "feedback: 3.10")
    assert edits.read(TASK, text, row) == Intent(TASK, "reject", answer="3.10")


@pytest.mark.parametrize(
    ("old", "new", "why"),
    [("answer: x", "answer: &x [*x]", "holds a list or a mapping"),
     ("answer: x", "answer: " + "[" * 600 + "]" * 600, "holds a list or a mapping"),
     ("answer: x", "answer: " + "[" * 100_000, "not valid YAML"),
     ("answer: x", "answer: {a: b}", "holds a list or a mapping"),
     ("answer: x", "answer: [[a, b]]", "holds a list or a mapping"),
     ("answer: x", "answer: &a [*b]", "not valid YAML"),
     ("revision: ", "revision: !!timestamp abc\nwas: ", "made against revision abc"),
     ("revision: ", "revision: 2025-06-31\nwas: ", "made against revision 2025-06-31")],
)  # fmt: skip
def test_a_frontmatter_yaml_cannot_read_is_refused_not_raised(old: str, new: str, why: str) -> None:
    row = message_row()
    text = edited(edited(mirror.message_doc(row).text, 'answer: ""', "answer: x"), old, new)
    with pytest.raises(EditRefused, match=why.replace("[", r"\[")):
        edits.read(MESSAGE, text, row)


@pytest.mark.parametrize(
    ("typed", "why"),
    [("2025-06-31", "not a whole number"), ("!!int abc", "not a whole number"),
     ("!!timestamp abc", "not a whole number"), ("&x [*x]", "holds a list"),
     ("9" * 5000, "out of range")],
)  # fmt: skip
def test_a_priority_yaml_cannot_read_is_refused_not_raised(typed: str, why: str) -> None:
    row = task_row()
    text = edited(mirror.task_doc(row).text, "priority: 0", f"priority: {typed}")
    with pytest.raises(EditRefused, match=why):
        edits.read(TASK, text, row)


@pytest.mark.parametrize(("typed", "value"), [("010", 10), ("+3", 3), ("-7", -7), ('"4"', 4)])
def test_a_priority_is_the_decimal_number_typed(typed: str, value: int) -> None:
    row = task_row()
    text = edited(mirror.task_doc(row).text, "priority: 0", f"priority: {typed}")
    assert edits.read(TASK, text, row) == Intent(TASK, "edit", priority=value)


def test_a_field_written_twice_is_refused_not_read_as_the_last() -> None:
    row = task_row()
    text = edited(mirror.task_doc(row).text, "priority: 0", "priority: 3\npriority: 4")
    with pytest.raises(EditRefused, match="`priority:` appears twice; keep one"):
        edits.read(TASK, text, row)
