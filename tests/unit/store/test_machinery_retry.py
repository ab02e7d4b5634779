"""cw's machinery failing an attempt (git, the file system): tried again, unless a person asked
its agent to stop."""

from __future__ import annotations

from cw.states import TaskState as S
from cw.store import Claim, Store
from tests.factories import spec


def running(store: Store) -> Claim:
    store.submit(spec({"a": []}))
    (claim,) = store.claim_ready_tasks()
    assert store.start_attempt(claim, worker="w", host="h", lease_seconds=30)
    return claim


def test_a_machinery_failure_sends_the_task_back_to_ready(store: Store) -> None:
    claim = running(store)
    assert store.retry_machinery(claim, "git add ran longer than 600 s", 5, 2.0)
    assert store.task_state(claim.task_id) == S.READY


def test_a_machinery_failure_after_a_stop_request_leaves_the_task_stopped(store: Store) -> None:
    """The save of a stopped agent's work timed out: a retry would have run the agent again,
    the stop forgotten (the next claim clears it)."""
    claim = running(store)
    store.request_stop(claim.task_id)

    store.retry_machinery(claim, "git add ran longer than 600 s", 5, 2.0)

    assert store.task_state(claim.task_id) == S.STOPPED
    assert store.claim_ready_tasks() == []
    store.resume_task(claim.task_id)
    assert store.claim_ready_tasks() == [Claim(claim.task_id, 2)]
