"""The mirror's documents: safe names, YAML that reads back exactly, files that parse back."""

from __future__ import annotations

import random
import time

import pytest
import yaml

from cw.fsui import mirror
from cw.store import AttemptResult, Store
from cw.store.read import MessageRow, TaskRow
from cw.store.snapshot import Snapshot
from tests.factories import spec

TRICKY = [
    "", " ", "yes", "No", "ON", "null", "~", "y", "01", "1e3", "0x1f", "12:30", "2026-01-02",
    ".inf", "-", "- a", "? x", ": y", "a: b", "a #b", "#c", "[x]", "{a: 1}", "&a", "*a", "!t",
    "%p", "@x", "`x`", "|", ">", "'q'", '"q"', "\\", "a\nb", "tab\tx", "nul\0x", "\x7f\x85",
    "\u2028\u2029", "\ufeff", "é", "日本", "😀 emoji", "  lead", "trail  ", "../../etc", "a/b",
]  # fmt: skip


def task_row(**over: object) -> TaskRow:
    values: dict[str, object] = dict(
        id=7, key="build", name="Build it", kind="auto", state="pending", attempt=0,
        priority=0, prompt="do the thing", verify=None, done_criteria=None, last_error=None,
        conflict_files=[], state_changed_at=0.0, initiative_id=1, initiative="pay",
        phase="01", plan="01-02", agent=None, depends_on=["a", "b"],
    )  # fmt: skip
    values.update(over)
    return TaskRow(**values)  # type: ignore[arg-type]


def message_row(**over: object) -> MessageRow:
    values: dict[str, object] = dict(
        id=3, task_id=7, task="build", task_state="waiting", agent="amber-badger",
        author="agent", body="SQLite or Postgres?", options=["sqlite", "postgres"],
        multi_select=False, state="pending", answer=None, created_at=0.0, answered_at=None,
    )  # fmt: skip
    values.update(over)
    return MessageRow(**values)  # type: ignore[arg-type]


def front(text: str) -> dict[str, object]:
    parts = mirror.split(text)
    assert parts is not None
    data = yaml.safe_load(parts[0])
    assert isinstance(data, dict)
    return data


@pytest.mark.parametrize("text", TRICKY)
def test_every_name_becomes_one_harmless_path_component(text: str) -> None:
    name = mirror.component(text, "fallback")
    assert name and "/" not in name and "\0" not in name and ".." not in name
    assert not name.startswith(".") and len(name) <= 80


def test_a_name_that_had_to_change_cannot_meet_another_one() -> None:
    assert mirror.component("build", "x") == "build"
    assert mirror.component("a/b", "x") != mirror.component("a b", "x")
    assert mirror.component("../..", "x") != mirror.component("..", "x")


def test_a_path_traversal_task_stays_under_tasks() -> None:
    rel = mirror.task_rel(task_row(initiative="../../..", phase="..", plan="/etc", key="../x"))
    parts = rel.split("/")
    assert parts[0] == "tasks" and len(parts) == 5
    assert all(p and p not in (".", "..") and not p.startswith(".") for p in parts)


@pytest.mark.parametrize("loader", [yaml.SafeLoader, getattr(yaml, "CSafeLoader", yaml.SafeLoader)])
def test_yaml_scalars_read_back_exactly(loader: type) -> None:
    rng = random.Random(5)
    pool = "".join(TRICKY) + "abc:#'\"{}[],&*!|>%@` \t\n-?"
    samples = TRICKY + [
        "".join(rng.choice(pool) for _ in range(rng.randint(1, 12))) for _ in range(500)
    ]
    for value in [*samples, 0, -3, 2.5, True, False, None, ["a b", "yes", 1]]:
        emitted = mirror.yaml_scalar(value)
        assert "\n" not in emitted
        assert yaml.load(f"k: {emitted}\n", Loader=loader) == {"k": value}, emitted


def test_a_task_file_shows_its_row_and_reads_back() -> None:
    row = task_row(prompt="line one\n## Prompt inside\n", last_error="boom\n## Prompt\nno")
    doc = mirror.task_doc(row)
    fields = front(doc.text)
    assert fields["task"] == "build" and fields["phase"] == "01" and fields["plan"] == "01-02"
    assert fields["depends_on"] == ["a", "b"] and fields["priority"] == 0
    assert fields["action"] == "none" and fields["revision"] == doc.revision
    body = mirror.split(doc.text)[1]  # type: ignore[index]
    assert mirror.section(body, mirror.PROMPT_HEADING) == row.prompt + "\n"
    assert doc.rel == "tasks/pay/01/01-02/build.md"


def test_the_revision_changes_with_any_rendered_field_only() -> None:
    row = task_row()
    assert mirror.task_doc(row).revision == mirror.task_doc(task_row()).revision
    assert mirror.task_doc(row).revision != mirror.task_doc(task_row(state="ready")).revision
    assert mirror.task_doc(row).revision != mirror.task_doc(task_row(priority=1)).revision


def test_a_message_file_offers_both_places_to_answer() -> None:
    doc = mirror.message_doc(message_row(body="Which?\n## Answer\nnot a heading"))
    fields = front(doc.text)
    assert fields["answer"] == "" and fields["options"] == ["sqlite", "postgres"]
    body = mirror.split(doc.text)[1]  # type: ignore[index]
    assert mirror.section(body, mirror.ANSWER_HEADING) == "\n"
    assert doc.rel == "messages/3-build.md"


@pytest.mark.parametrize(
    ("rel", "message"),
    [("messages/12.answer.md", 12), ("messages/12.answer.txt", 12),
     ("messages/12-build.answer.txt", None), ("messages/12-q.answer.md", None),
     ("messages/12.md", None), ("tasks/12.answer.md", None), ("messages/x.answer.md", None)],
)  # fmt: skip
def test_answer_files_are_recognised_by_name(rel: str, message: int | None) -> None:
    assert mirror.answer_file_message(rel) == message


def test_the_overview_lists_pending_questions_and_what_needs_a_person(database_url: str) -> None:
    store = Store.open(database_url)
    store.submit(spec({"a": [], "b": ["a"]}, kinds={"a": "checkpoint:human-verify"}))
    store.claim_ready_tasks()
    store.cancel_task(store.find_task_id("b"))
    snapshot = Snapshot(store.engine)
    text = mirror.status_doc(snapshot.overview(10)).text
    store.close()
    assert "2 tasks: 1 waiting, 1 cancelled." in text or "2 tasks: 1 cancelled, 1 waiting." in text
    assert "[message 1](messages/1-a.md) from checkpoint (task a)" in text
    assert "| test | 01 | 01-01 | 0/2 |" in text


def test_the_overview_says_which_adapter_a_usage_limit_paused(database_url: str) -> None:
    store = Store.open(database_url)
    store.submit(spec({"a": []}))
    (claim,) = store.claim_ready_tasks()
    store.start_attempt(claim, worker="w", host="h", lease_seconds=30)
    limited = AttemptResult(outcome="rate_limited", not_before=time.time() + 600, error="limit")
    store.finish_attempt(claim, limited, "claude")
    text = mirror.status_doc(Snapshot(store.engine).overview(10)).text
    store.close()
    assert "**claude paused by a usage limit until " in text
    assert "(task a hit it): no new claude agent starts; `cw limits resume` lifts it**" in text
