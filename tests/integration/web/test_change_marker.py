"""The page's change marker: every move the page may show changes it, with no other event."""

from __future__ import annotations

from cw.store import AttemptResult, Store
from cw.web.board import change_marker
from tests.factories import spec


def test_each_move_of_a_merge_tells_the_page_at_once(database_url: str) -> None:
    """A merge begun, left behind by its train and retried after git failed: the page heard of
    none of them until some other change of the district."""
    store = Store.open(database_url)
    try:
        store.submit(spec({"a": []}))
        (claim,) = store.claim_ready_tasks()
        assert store.start_attempt(claim, worker="w", host="h", lease_seconds=30)
        assert store.finish_attempt(claim, AttemptResult(outcome="done"), "command")
        moves = {
            "begun": lambda: store.begin_merge(claim),
            "requeued": lambda: store.requeue_merge(claim),
            "retried": lambda: store.retry_merge(claim, "index.lock exists", 5, 2.0),
        }
        for move, make in moves.items():
            before = change_marker(store)
            assert make()
            assert change_marker(store) != before, f"the merge {move}, the page not told"
    finally:
        store.close()
