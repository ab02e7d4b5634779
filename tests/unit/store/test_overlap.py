"""Keeping tasks that declare the same files apart: the choice, then the claim."""

from __future__ import annotations

import pytest

from cw.states import TaskState
from cw.store import Store
from cw.store.overlap import Candidate, choose, declared_files, overlaps
from tests.factories import spec
from tests.unit.store.test_store import run_to_done


def c(task_id: int, *files: str, kind: str = "auto") -> Candidate:
    return Candidate(task_id, kind, frozenset(files))


@pytest.mark.parametrize(
    ("mine", "busy", "expected"),
    [({"a.py"}, {"a.py"}, True), ({"src/api/x.py"}, {"src/api/"}, True),
     ({"src/api"}, {"src/api/x.py"}, True), ({"src/apix.py"}, {"src/api"}, False),
     ({"a.py"}, {"b.py"}, False), (set(), {"a.py"}, False)],
)  # fmt: skip
def test_files_overlap_when_equal_or_one_holds_the_other(
    mine: set[str], busy: set[str], expected: bool
) -> None:
    assert overlaps(frozenset(mine), busy) is expected


def test_a_task_without_files_declares_its_plans_files_modified_normalised() -> None:
    assert declared_files(["./src//a.py", " `b.py` "], {}) == {"src/a.py", "b.py"}
    assert declared_files([], {"files_modified": ["src/x.py", "docs/"]}) == {"src/x.py", "docs/"}
    assert declared_files([], {"files_modified": "one.py"}) == {"one.py"}
    assert declared_files([], {}) == frozenset()


def test_ignore_starts_everything_in_order() -> None:
    ready = [c(1, "a"), c(2, "a")]
    assert choose(ready, {"a"}, "ignore", waiting=0) == ready


def test_strict_never_starts_a_task_beside_one_sharing_a_file() -> None:
    ready = [c(1, "a"), c(2, "b"), c(3, "a", "c"), c(4)]
    assert [x.task_id for x in choose(ready, set(), "strict", waiting=0)] == [1, 2, 4]
    assert [x.task_id for x in choose(ready, {"b"}, "strict", waiting=0)] == [1, 4]
    assert choose([c(1, "a")], {"a"}, "strict", waiting=0) == []


def test_prefer_holds_an_overlapping_task_unless_nothing_else_would_run() -> None:
    assert [x.task_id for x in choose([c(1, "a"), c(2, "b")], {"a"}, "prefer", 0)] == [2]
    assert choose([c(1, "a")], {"a"}, "prefer", waiting=3) == [], "slots are busy: it waits"
    assert [x.task_id for x in choose([c(1, "a"), c(2, "a")], {"a"}, "prefer", 0)] == [1]


def test_a_checkpoint_is_never_held() -> None:
    ready = [c(1, "a", kind="checkpoint:human-verify")]
    assert choose(ready, {"a"}, "strict", waiting=0) == ready


def test_the_claim_keeps_tasks_with_the_same_files_apart_until_the_first_is_merged(
    database_url: str,
) -> None:
    store = Store.open(database_url)
    store.submit(spec({"a": [], "b": [], "c": []}, files={"a": ["x.py"], "b": ["./x.py"]}))
    keys = {t.id: t.key for t in store.task_rows()}
    first = store.claim_ready_tasks(overlap="strict")
    assert [keys[claim.task_id] for claim in first] == ["a", "c"]
    assert store.claim_ready_tasks(overlap="strict") == [], "a is in flight"
    run_to_done(store, first[0])
    assert store.task_state(first[0].task_id) == TaskState.DONE
    assert [keys[claim.task_id] for claim in store.claim_ready_tasks(overlap="strict")] == ["b"]
    store.close()
