"""Every move of a merge writes its event, in the move's own transaction: the file UI and the
web page follow the events table, and a move without one reached them only with the next."""

from __future__ import annotations

from cw.store import AttemptResult, Claim, Store
from tests.factories import spec


def finished(store: Store) -> Claim:
    """A task whose agent finished: its merge waits for a merge worker."""
    store.submit(spec({"a": []}))
    (claim,) = store.claim_ready_tasks()
    assert store.start_attempt(claim, worker="w", host="h", lease_seconds=30)
    assert store.finish_attempt(claim, AttemptResult(outcome="done", head_sha="abc"), "command")
    return claim


def merge_events(store: Store, claim: Claim) -> list[tuple[str, int | None, str | None]]:
    return [
        (e.kind, e.attempt, e.data.get("note"))
        for e in store.events(claim.task_id)
        if e.kind.startswith("merge.")
    ]


def merge_state(store: Store, claim: Claim) -> str:
    (row,) = [m for m in store.merge_rows() if (m.task_id, m.attempt) == (claim.task_id, 1)]
    return row.state


def test_a_merge_begun_writes_merge_begun(store: Store) -> None:
    claim = finished(store)
    assert store.begin_merge(claim) is not None
    assert merge_state(store, claim) == "merging"
    assert merge_events(store, claim) == [("merge.begun", 1, None)]


def test_a_merge_a_train_left_behind_writes_merge_requeued(store: Store) -> None:
    claim = finished(store)
    store.begin_merge(claim)
    assert store.requeue_merge(claim)
    assert merge_state(store, claim) == "queued"
    assert merge_events(store, claim) == [("merge.begun", 1, None), ("merge.requeued", 1, None)]


def test_a_merge_git_failed_around_writes_merge_retried_with_the_error(store: Store) -> None:
    claim = finished(store)
    store.begin_merge(claim)
    assert store.retry_merge(claim, "index.lock exists", retries=1, pause=2.0) == 2.0
    assert merge_state(store, claim) == "queued"
    assert merge_events(store, claim)[-1] == ("merge.retried", 1, "index.lock exists")
    store.begin_merge(claim)
    assert store.retry_merge(claim, "index.lock exists", retries=1, pause=2.0) is None
    kinds = [e.kind for e in store.events(claim.task_id)]
    assert kinds[-2:] == ["merge.begun", "task.failed"], "given up: the task's own event"
    before = store.events()  # no longer its merge's business: nothing moves, nothing written
    assert store.begin_merge(claim) is None
    assert not store.requeue_merge(claim)
    assert store.retry_merge(claim, "late", retries=5, pause=2.0) is None
    assert store.events() == before
