"""Review before merge in the store: the review state, approve, reject, the review mode."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from cw.errors import UsageError
from cw.store import AttemptResult, Claim, MergeReport, Store
from cw.store.records import Bounce, ReviewCheck, Scope
from tests.factories import spec

CHECK = ReviewCheck(command="test -f a.txt", exit_code=0, output="")


def to_review(store: Store) -> Claim:
    (claim,) = store.claim_ready_tasks(limit=1)
    assert store.start_attempt(claim, worker="w", host="h", lease_seconds=30)
    result = AttemptResult(outcome="review", head_sha="h1", summary="wrote a", review_check=CHECK)
    assert store.finish_attempt(claim, result, "command")
    return claim


def test_finished_work_waits_in_review_with_its_check_and_a_message(store: Store) -> None:
    store.submit(spec({"a": [], "b": ["a"]}))
    claim = to_review(store)
    (row,) = store.review_rows()
    assert (row.key, row.attempt, row.summary, row.check) == ("a", 1, "wrote a", CHECK)
    (notice,) = store.message_rows(pending=True)
    assert (notice.author, notice.options) == ("review", ["approve"])
    assert store.claim_ready_tasks() == [], "b waits for a's merge"
    assert store.approve(claim.task_id) == claim
    assert store.task_state(claim.task_id) == "merging"
    assert store.message_rows(pending=True) == [], "the notice is settled"
    with pytest.raises(UsageError, match="task a is merging: only a task in review"):
        store.approve(claim.task_id)


def test_an_approved_merge_waits_in_the_merge_queue_where_recovery_finds_it(
    store: Store,
) -> None:
    store.submit(spec({"a": []}))
    claim = to_review(store)
    assert store.merges_not_begun() == []
    store.approve(claim.task_id)
    assert store.merges_not_begun() == [claim], "a lost merge message is re-sent"
    job = store.begin_merge(claim)
    assert job is not None and store.begun_merges() == [claim]


def test_a_merge_approved_by_an_older_cw_without_its_merge_row_is_found_and_recorded(
    store: Store,
) -> None:
    store.submit(spec({"a": []}))
    claim = to_review(store)
    store.approve(claim.task_id)
    with store.engine.begin() as conn:  # what approval left before it queued the merge
        conn.execute(text("DELETE FROM merges"))
    assert store.merges_not_begun() == [claim]
    assert store.begin_merge(claim) is not None and store.begun_merges() == [claim]
    assert store.finish_merge(claim, MergeReport(sha="1" * 40))
    (row,) = store.merge_rows()
    assert (row.state, row.result_sha) == ("merged", "1" * 40)


def test_a_rejection_sends_the_feedback_to_the_next_attempt(store: Store) -> None:
    store.submit(spec({"a": []}))
    claim = to_review(store)
    with pytest.raises(UsageError, match="a rejection needs feedback"):
        store.reject(claim.task_id, "  ")
    store.reject(claim.task_id, "use tabs")
    (again,) = store.claim_ready_tasks()
    assert again == Claim(claim.task_id, 2)
    workspace = store.start_attempt(again, worker="w", host="h", lease_seconds=30)
    assert workspace is not None
    assert workspace.bounce == Bounce("rejected", feedback="use tabs")
    (notice,) = store.message_rows()
    assert (notice.state, notice.answer) == ("answered", "use tabs")


def test_a_plans_review_mode_wins_over_its_initiatives(store: Store) -> None:
    store.submit(spec({"a": []}, name="Tally"))
    store.set_review_mode(Scope(initiative="Tally"), "manual")
    store.set_review_mode(Scope(plan="01-01"), "auto")

    def mode() -> str | None:
        (claim,) = store.claim_ready_tasks()
        workspace = store.start_attempt(claim, worker="w", host="h", lease_seconds=30)
        assert workspace is not None
        store.finish_attempt(claim, AttemptResult(outcome="interrupted"), "command")
        return workspace.review

    assert mode() == "auto"
    store.set_review_mode(Scope(plan="01-01"), "inherit")
    assert mode() == "manual"
    with pytest.raises(UsageError, match="no plan 'nope'"):
        store.set_review_mode(Scope(plan="nope"), "manual")
