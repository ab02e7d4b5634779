"""max_running: at most ``cap`` agent tasks claimed or running at once, whoever claims."""

from __future__ import annotations

import pytest

from cw.errors import UsageError
from cw.store import AttemptResult, Claim, MergeReport, Store
from tests.factories import spec


def states(store: Store) -> dict[str, str]:
    return {t.key: t.state.value for t in store.task_rows()}


def to_merging(store: Store, claim: Claim) -> None:
    assert store.start_attempt(claim, worker="w", host="h", lease_seconds=30)
    assert store.finish_attempt(claim, AttemptResult(outcome="done", head_sha="h"), "claude")
    assert store.begin_merge(claim)


def test_claims_stop_at_the_cap_and_go_on_as_agents_finish(store: Store) -> None:
    store.submit(spec({key: [] for key in "abcdef"}))
    first = store.claim_ready_tasks(cap=4)
    assert len(first) == 4
    assert store.claim_ready_tasks(cap=4) == [], "four claimed: none more"
    store.start_attempt(first[0], worker="w", host="h", lease_seconds=30)
    assert store.claim_ready_tasks(cap=4) == [], "running counts as claimed"
    to_merging(store, first[1])
    (fifth,) = store.claim_ready_tasks(cap=4)  # one agent done: one slot
    assert store.claim_ready_tasks(cap=4, limit=5) == []
    assert fifth not in first


def test_a_full_cap_still_opens_checkpoints(store: Store) -> None:
    store.submit(spec({"a": [], "b": [], "c": [], "ask": []}, kinds={"ask": "checkpoint:decision"}))
    ids = {t.key: t.id for t in store.task_rows()}
    for key in "ab":
        store.claim_task(ids[key])  # spawned: the cap is full
    assert store.claim_ready_tasks(cap=2) == []
    assert states(store)["ask"] == "waiting", "a checkpoint holds no agent"


def test_work_sent_back_while_the_cap_is_full_waits_ready_for_a_slot(store: Store) -> None:
    store.submit(spec({"a": [], "b": [], "c": []}))
    a, b = store.claim_ready_tasks(cap=2)
    to_merging(store, a)
    assert len(store.claim_ready_tasks(cap=2)) == 1  # a's agent finished: c takes its slot
    conflict = MergeReport(conflict_files=["x.py"], output="CONFLICT (content)")
    assert store.bounce(a, conflict, intent=[], max_bounces=3, cap=2) is None
    assert states(store)["a"] == "ready", "b and c run: a waits for a slot"
    detail = store.task_detail(a.task_id)
    assert (detail.bounces, detail.conflict_files) == (1, ["x.py"]), "sent back all the same"
    to_merging(store, b)
    (again,) = store.claim_ready_tasks(cap=2)
    assert again == Claim(a.task_id, a.attempt + 1), "the next attempt of a, with its bounce"


def test_a_spawn_over_the_cap_is_refused_and_changes_nothing(store: Store) -> None:
    store.submit(spec({"a": [], "b": []}))
    assert len(store.claim_ready_tasks(cap=1)) == 1
    b = next(t.id for t in store.task_rows() if t.key == "b")
    with pytest.raises(UsageError, match="1 agents already run, as many as max_running allows"):
        store.claim_task(b, cap=1)
    assert states(store) == {"a": "queued", "b": "ready"}
    assert store.claim_task(b) == Claim(b, 1), "no cap: spawned"


def test_a_check_that_timed_out_says_so_not_exited_none(store: Store) -> None:
    store.submit(spec({"a": []}))
    (a,) = store.claim_ready_tasks()
    to_merging(store, a)
    slow = MergeReport(rejected=True, verify_command="sleep 1000", verify_output="(timed out)")
    store.bounce(a, slow, intent=[], max_bounces=3)
    error = str(store.task_detail(a.task_id).last_error)
    assert "verify failed: `sleep 1000` timed out" in error, error
