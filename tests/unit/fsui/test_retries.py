"""What the watcher reads again after a failure (a busy database), and when it gives up."""

from __future__ import annotations

from cw.fsui.cursor import EventCursor
from cw.fsui.debounce import Debounce
from cw.store.read import EventRow


def test_a_path_that_keeps_failing_is_given_up_until_it_is_saved_again() -> None:
    pending = Debounce(lambda _rel: False, tries=3)
    pending.changes.put("tasks/a.md")
    pending.wait(0)
    assert pending.take(force=True) == ["tasks/a.md"]
    for _ in range(2):
        pending.again(["tasks/a.md"])
        assert pending.take(force=True) == ["tasks/a.md"], "read again at the next turn"
    pending.again(["tasks/a.md"])
    assert pending.take(force=True) == [], "the third failure in a row: given up"
    pending.changes.put("tasks/a.md")
    pending.wait(0)
    assert pending.take(force=True) == ["tasks/a.md"]


def test_a_success_starts_the_count_of_failures_over() -> None:
    pending = Debounce(lambda _rel: False, tries=2)
    pending.later("a.md")
    for _ in range(3):
        assert pending.take(force=True) == ["a.md"]
        pending.again(["a.md"])
        assert pending.take(force=True) == ["a.md"]
        pending.done(["a.md"])
        pending.later("a.md")


def test_events_that_keep_failing_are_given_up_and_the_rest_go_on() -> None:
    cursor = EventCursor(tries=2)
    events = [EventRow(id=7, at=0.0, kind="task.edited", task_id=1, attempt=None, data={})]
    cursor.failed(events)
    assert cursor.last == 0, "read again"
    cursor.failed(events)
    assert cursor.last == 7, "given up"
    assert cursor.gaps == list(range(1, 7))
