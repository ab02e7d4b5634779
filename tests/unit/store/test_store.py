"""The store against a real SQLite file: compare-and-set moves, dispatch order, the event log."""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from cw.errors import LeaseHeld, StaleState, UsageError
from cw.plans.load import load_plan
from cw.states import TRANSITIONS, TaskState, check_transition
from cw.store import AttemptResult, Claim, MergeReport, Store, db, glance
from cw.store.models import Base
from cw.store.records import Question, Scope
from tests.conftest import race
from tests.factories import spec

S = TaskState
NON_SERIES_PARALLEL = {"a": [], "b": [], "c": ["a", "b"], "d": ["b"], "e": ["d"]}


def states(store: Store) -> dict[str, str]:
    return {t["key"]: t["state"].value for t in store.task_rows()}


def ids(store: Store) -> dict[str, int]:
    return {t["key"]: t["id"] for t in store.task_rows()}


def run_to_done(store: Store, claim: Claim) -> None:
    assert store.start_attempt(claim, worker="w", host="h", lease_seconds=30)
    assert store.finish_attempt(claim, AttemptResult(outcome="done", head_sha="abc"), "command")
    assert store.begin_merge(claim)
    assert store.finish_merge(claim, MergeReport(sha="def"))


def test_migration_creates_exactly_the_models(store: Store) -> None:
    with store.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []


@pytest.mark.sqlite_only
def test_sqlite_runs_in_wal_mode(store: Store) -> None:
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"


def test_roots_are_ready_and_the_rest_pending_after_submit(store: Store) -> None:
    store.submit(spec(NON_SERIES_PARALLEL))
    assert states(store) == {
        "a": "ready",
        "b": "ready",
        "c": "pending",
        "d": "pending",
        "e": "pending",
    }


def test_the_same_plan_submitted_twice_adds_nothing_the_second_time(store: Store) -> None:
    store.submit(spec({"a": [], "b": ["a"]}))
    before = store.task_rows()
    again = store.submit(spec({"a": [], "b": ["a"]}))
    assert again.nothing_new and again.new_tasks == []
    assert store.task_rows() == before


def test_task_waits_until_every_dependency_is_merged(store: Store) -> None:
    store.submit(spec(NON_SERIES_PARALLEL))
    claims = {c.task_id: c for c in store.claim_ready_tasks()}
    key = ids(store)
    run_to_done(store, claims[key["b"]])
    store.promote_ready()
    assert states(store)["d"] == "ready"  # d needs only b
    assert states(store)["c"] == "pending"  # c also needs a
    run_to_done(store, claims[key["a"]])
    assert states(store)["c"] == "ready"


def test_a_task_is_claimed_once_by_racing_dispatchers(database_url: str) -> None:
    url = database_url
    first = Store.open(url)
    first.submit(spec({f"t{i}": [] for i in range(40)}))
    first.close()
    results: list[list[Claim]] = []

    def dispatcher() -> None:
        own = Store.open(url)
        results.append(own.claim_ready_tasks())
        own.close()

    threads = [threading.Thread(target=dispatcher) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    claimed = [c.task_id for r in results for c in r]
    assert sorted(claimed) == sorted(set(claimed))
    assert len(claimed) == 40


def test_a_stale_attempt_cannot_start_or_finish(store: Store) -> None:
    store.submit(spec({"a": []}))
    (claim,) = store.claim_ready_tasks()
    stale = Claim(claim.task_id, claim.attempt + 1)
    assert store.start_attempt(stale, worker="w", host="h", lease_seconds=30) is None
    assert store.start_attempt(claim, worker="w", host="h", lease_seconds=30)
    with pytest.raises(LeaseHeld):
        store.start_attempt(claim, worker="w2", host="h", lease_seconds=30)
    assert not store.finish_attempt(stale, AttemptResult(outcome="done"), "command")
    assert states(store)["a"] == "running"


def test_a_redelivered_attempt_takes_over_only_after_the_lease_expires(store: Store) -> None:
    store.submit(spec({"a": []}))
    (claim,) = store.claim_ready_tasks()
    assert store.start_attempt(claim, worker="w", host="h", lease_seconds=-1)
    assert store.record_heartbeat(claim, -1, pid=4242)
    taken = store.start_attempt(claim, worker="w2", host="h2", lease_seconds=30)
    assert taken is not None and taken.attempt == claim.attempt + 1, "a new attempt"
    assert taken.previous == ("h", 4242)
    assert store.start_attempt(claim, worker="w3", host="h", lease_seconds=30) is None
    # The old worker, waking up, is fenced out: its heartbeat and its result are refused.
    assert not store.record_heartbeat(claim, 30)
    assert not store.finish_attempt(claim, AttemptResult(outcome="failed"), "command")
    new = Claim(claim.task_id, taken.attempt)
    assert store.finish_attempt(new, AttemptResult(outcome="done"), "command")
    runs = store.task_detail(claim.task_id)["runs"]
    assert [(r["attempt"], r["state"], r["worker"]) for r in runs] == [
        (1, "lost", "w"),
        (2, "succeeded", "w2"),
    ]


def test_a_redelivered_attempt_whose_agent_was_asked_to_stop_leaves_the_task_stopped(
    store: Store,
) -> None:
    """Its worker died before it saw the stop: the takeover does what the reconciler does."""
    store.submit(spec({"a": []}))
    (claim,) = store.claim_ready_tasks()
    assert store.start_attempt(claim, worker="w", host="h", lease_seconds=-1)
    assert store.record_heartbeat(claim, -1, pid=4242)
    assert store.request_stop(claim.task_id) == (S.RUNNING, "h", 4242)

    assert store.start_attempt(claim, worker="w2", host="h2", lease_seconds=30) is None

    assert store.task_state(claim.task_id) == S.STOPPED, "as a stop of a live agent leaves it"
    runs = store.task_detail(claim.task_id)["runs"]
    assert [(r["attempt"], r["state"], r["worker"]) for r in runs] == [(1, "lost", "w")]
    assert "asked to stop" in runs[0]["error"]
    kinds = [e["kind"] for e in store.events(claim.task_id)]
    assert "attempt.lost" in kinds and "attempt.taken_over" not in kinds
    assert store.start_attempt(claim, worker="w3", host="h", lease_seconds=30) is None
    assert store.release_lost_attempts(time.time() + 60) == [], "nothing left to release"
    assert not store.record_heartbeat(claim, 30), "the old worker, waking, stops its agent"
    assert store.claim_ready_tasks() == []
    store.resume_task(claim.task_id)
    assert store.claim_ready_tasks() == [Claim(claim.task_id, 2)]


def test_takeovers_and_reconcilers_racing_for_a_stopped_lost_attempt_stop_it_once(
    database_url: str,
) -> None:
    """Two deliveries of its message and two reconcilers at once: one of them stops the task,
    the others find it moved; nobody runs its agent again."""
    first = Store.open(database_url)
    first.submit(spec({"a": []}))
    (claim,) = first.claim_ready_tasks()
    assert first.start_attempt(claim, worker="w", host="h", lease_seconds=-1)
    first.request_stop(claim.task_id)
    started: list[object] = []

    def takeover(other: Store) -> None:
        started.append(other.start_attempt(claim, worker="w2", host="h2", lease_seconds=30))

    def reconciler(other: Store) -> None:
        other.release_lost_attempts(time.time())

    race(database_url, [reconciler, takeover, reconciler, takeover])

    assert started == [None, None], "no delivery runs the agent again"
    assert first.task_state(claim.task_id) == S.STOPPED
    kinds = [e["kind"] for e in first.events(claim.task_id)]
    assert kinds.count("attempt.lost") == 1 and kinds.count("task.stopped") == 1
    assert [r["state"] for r in first.task_detail(claim.task_id)["runs"]] == ["lost"]
    first.close()


def test_heartbeat_tells_a_worker_it_lost_its_task(store: Store) -> None:
    store.submit(spec({"a": []}))
    (claim,) = store.claim_ready_tasks()
    store.start_attempt(claim, worker="w", host="h", lease_seconds=30)
    assert store.record_heartbeat(claim, 30)
    store.finish_attempt(claim, AttemptResult(outcome="failed", error="boom"), "command")
    assert not store.record_heartbeat(claim, 30)


def test_failure_blocks_every_task_downstream(store: Store) -> None:
    store.submit(spec(NON_SERIES_PARALLEL))
    claims = {c.task_id: c for c in store.claim_ready_tasks()}
    b = claims[ids(store)["b"]]
    store.start_attempt(b, worker="w", host="h", lease_seconds=30)
    store.finish_attempt(b, AttemptResult(outcome="failed", error="exit code 3"), "command")
    assert states(store) == {
        "a": "queued",
        "b": "failed",
        "c": "blocked",
        "d": "blocked",
        "e": "blocked",
    }


def test_conflict_records_the_files_and_releases_nothing(store: Store) -> None:
    store.submit(spec({"a": [], "b": ["a"]}))
    (claim,) = store.claim_ready_tasks()
    store.start_attempt(claim, worker="w", host="h", lease_seconds=30)
    store.finish_attempt(claim, AttemptResult(outcome="done"), "command")
    store.begin_merge(claim)
    store.finish_merge(claim, MergeReport(conflict_files=["x.py"], output="CONFLICT"))
    detail = store.task_detail(claim.task_id)
    assert detail["state"] == S.CONFLICT and detail["conflict_files"] == ["x.py"]
    assert states(store)["b"] == "pending"


def test_checkpoint_tasks_wait_for_a_person_with_a_message(store: Store) -> None:
    store.submit(spec({"a": []}, kinds={"a": "checkpoint:human-verify"}))
    assert store.claim_ready_tasks() == []
    detail = store.task_detail(ids(store)["a"])
    assert detail["state"] == S.WAITING
    assert [m["author"] for m in detail["messages"]] == ["checkpoint"]


def test_every_state_change_is_in_the_event_log(store: Store) -> None:
    store.submit(spec({"a": []}))
    (claim,) = store.claim_ready_tasks()
    run_to_done(store, claim)
    kinds = [e["kind"] for e in store.events(claim.task_id)]
    assert kinds == ["task.queued", "task.running", "task.merging", "merge.begun", "task.done"]


def test_illegal_transitions_are_rejected() -> None:
    with pytest.raises(StaleState):
        check_transition(S.DONE, S.RUNNING)
    assert (S.QUEUED, S.RUNNING) in TRANSITIONS


def test_find_task_by_id_or_key(store: Store) -> None:
    store.submit(spec({"alpha": []}))
    task_id = ids(store)["alpha"]
    assert store.find_task_id("alpha") == task_id
    assert store.find_task_id(str(task_id)) == task_id
    with pytest.raises(UsageError, match="no task 'zeta'"):
        store.find_task_id("zeta")


def test_a_number_that_is_one_tasks_id_and_another_tasks_key_is_refused(store: Store) -> None:
    store.submit(spec({"a": [], "b": [], "c": []}))
    store.submit(spec({"3": [], "d": []}, name="numbered"))
    keyed = next(t["id"] for t in store.task_rows() if t["key"] == "3")
    said = f"task '3' is the id of one task and the key of another \\(id:{keyed}\\): say id:3"
    with pytest.raises(UsageError, match=said):
        store.find_task_id("3")
    assert store.find_task_id("id:3") == ids(store)["c"]
    assert store.find_task_id(str(keyed)) == keyed
    with pytest.raises(UsageError, match="no task 'id:99'"):
        store.find_task_id("id:99")


def test_retry_of_a_failed_task_unblocks_what_waited_on_it(store: Store) -> None:
    store.submit(spec({"a": [], "b": ["a"], "c": ["b"]}))
    (claim,) = store.claim_ready_tasks()
    store.start_attempt(claim, worker="w", host="h", lease_seconds=30)
    store.finish_attempt(claim, AttemptResult(outcome="failed", error="boom"), "command")
    assert states(store) == {"a": "failed", "b": "blocked", "c": "blocked"}
    store.retry_task(claim.task_id)
    assert states(store) == {"a": "ready", "b": "pending", "c": "pending"}
    (again,) = store.claim_ready_tasks()
    assert again == Claim(claim.task_id, claim.attempt + 1)


def test_only_failed_tasks_can_be_retried_and_unstarted_ones_cancelled(store: Store) -> None:
    store.submit(spec({"a": [], "b": ["a"]}))
    key = ids(store)
    with pytest.raises(UsageError, match="a is ready: only a failed task"):
        store.retry_task(key["a"])
    store.cancel_task(key["a"])
    assert states(store) == {"a": "cancelled", "b": "blocked"}
    with pytest.raises(UsageError, match="a is cancelled: only a task that is not finished"):
        store.cancel_task(key["a"])


def test_a_task_in_a_persons_hands_may_be_given_up_and_one_at_work_may_not(store: Store) -> None:
    store.submit(spec({"a": [], "b": ["a"], "c": []}))
    key = ids(store)
    first, second = store.claim_ready_tasks()
    store.start_attempt(first, worker="w", host="h", lease_seconds=30)
    with pytest.raises(UsageError, match="its agent is at work: stop it first"):
        store.cancel_task(first.task_id)
    store.finish_attempt(first, AttemptResult(outcome="failed", error="boom"), "command")
    store.cancel_task(key["a"])
    assert states(store)["a"] == "cancelled" and states(store)["b"] == "blocked"
    store.start_attempt(second, worker="w", host="h", lease_seconds=30)
    asked = AttemptResult(outcome="questions", questions=[Question("q1", "Which way?")])
    store.finish_attempt(second, asked, "command")
    assert states(store)["c"] == "waiting"
    store.cancel_task(key["c"])
    assert states(store)["c"] == "cancelled"
    (message,) = store.message_rows()
    assert (message.state, message.answer) == ("closed", None)
    with pytest.raises(UsageError, match="closed when its task was cancelled"):
        store.answer_message(message.id, "left")


def test_the_state_diagram_in_the_docs_matches_the_code() -> None:
    doc = (Path(__file__).parents[3] / "docs" / "task-states.md").read_text()
    drawn = set(re.findall(r"^    (\w+) --> (\w+)$", doc, flags=re.MULTILINE))
    assert drawn == {(a.value, b.value) for a, b in TRANSITIONS}


def test_ready_tasks_that_unlock_longer_chains_are_claimed_first(store: Store) -> None:
    store.submit(spec({"lone": [], "head": [], "mid": ["head"], "tail": ["mid"]}))
    first, second = store.claim_ready_tasks(limit=1), store.claim_ready_tasks(limit=1)
    key = ids(store)
    assert [first[0].task_id, second[0].task_id] == [key["head"], key["lone"]]


def test_the_schema_revision_constant_is_alembics_head(store: Store) -> None:
    head = ScriptDirectory.from_config(db.alembic_config(store.engine)).get_current_head()
    assert glance.SCHEMA_REVISION == head == db.schema_revision(store.engine)


def test_a_spent_budget_stops_new_work_in_its_plan_and_says_so(store: Store) -> None:
    store.submit(spec({"a": [], "b": [], "c": ["a"]}))
    store.set_budget(Scope(plan="01-01"), usd=0.05)
    first = store.claim_ready_tasks(limit=1)
    store.start_attempt(first[0], worker="w", host="h", lease_seconds=30)
    result = AttemptResult(outcome="done", cost_usd=0.07)
    store.finish_attempt(first[0], result, "claude")
    assert store.claim_ready_tasks() == [], "the plan's budget is spent"
    (budget,) = store.budgets()
    assert budget["exhausted"] and budget["spent_usd"] == pytest.approx(0.07)
    store.set_budget(Scope(plan="01-01"), usd=0.05, tokens=10)
    store.remove_budget(Scope(plan="01-01"), usd=False, tokens=True)
    assert store.claim_ready_tasks() == [], "the cap in dollars stays"
    store.remove_budget(Scope(plan="01-01"), usd=True, tokens=False)
    assert store.budgets() == []
    assert len(store.claim_ready_tasks()) == 1, "taking the cap away lets work start again"


def test_an_initiative_budget_covers_all_its_plans(store: Store) -> None:
    store.submit(spec({"a": [], "b": []}, name="paid"))
    store.set_budget(Scope(initiative="paid"), usd=0.0)
    assert store.claim_ready_tasks() == []
    with pytest.raises(UsageError, match="no initiative 'nope'"):
        store.set_budget(Scope(initiative="nope"), usd=1.0)


def test_work_queued_before_its_budget_was_spent_never_starts_and_a_raised_cap_sends_it(
    store: Store,
) -> None:
    """Every ready task is sent at once: the cap was checked only then, so with a $1 cap and
    one slot, four tasks queued behind the first all ran ($8 spent)."""
    store.submit(spec({"a": [], "b": [], "c": []}))
    store.set_budget(Scope(plan="01-01"), usd=1.0)
    first, *queued = store.claim_ready_tasks()
    store.start_attempt(first, worker="w", host="h", lease_seconds=30)
    store.finish_attempt(first, AttemptResult(outcome="done", cost_usd=2.0), "claude")
    for claim in queued:
        assert store.start_attempt(claim, worker="w", host="h", lease_seconds=30) is None
        detail = store.task_detail(claim.task_id)
        assert (detail.state.value, detail.attempt) == ("ready", 0), "its attempt never began"
        assert "budget was spent" in str(detail.last_error)
    assert store.claim_ready_tasks() == []
    store.set_budget(Scope(plan="01-01"), usd=5.0)
    again = store.claim_ready_tasks()
    assert sorted(c.attempt for c in again) == [1, 1]
    assert all(store.start_attempt(c, worker="w", host="h", lease_seconds=30) for c in again)


def test_a_bounce_after_the_budget_was_spent_waits_in_ready(store: Store) -> None:
    store.submit(spec({"a": []}))
    store.set_budget(Scope(plan="01-01"), usd=1.0)
    (claim,) = store.claim_ready_tasks()
    store.start_attempt(claim, worker="w", host="h", lease_seconds=30)
    store.finish_attempt(claim, AttemptResult(outcome="done", cost_usd=5.0), "claude")
    store.begin_merge(claim)
    report = MergeReport(conflict_files=["x.py"])
    assert store.bounce(claim, report, intent=[], max_bounces=3) is None, "not on spent money"
    assert store.task_state(claim.task_id).value == "ready"
    store.set_budget(Scope(plan="01-01"), usd=10.0)
    (again,) = store.claim_ready_tasks()
    assert again.attempt == 2


def test_spawning_an_agent_past_a_spent_budget_is_refused_in_one_line(store: Store) -> None:
    store.submit(spec({"a": [], "b": []}))
    store.set_budget(Scope(plan="01-01"), usd=0.0)
    b = store.find_task_id("b")
    store.make_ready(b)
    with pytest.raises(UsageError, match="the budget of its plan or initiative is spent"):
        store.claim_task(b)
    assert store.task_state(b).value == "ready"


def test_a_priority_written_as_1_0_is_priority_1(store: Store, tmp_path: Path) -> None:
    """JSON Schema takes 1.0 for an integer; the task was stored with priority 0."""
    (tmp_path / "p.yaml").write_text(
        "initiative: y\ntasks:\n  - {id: b, prompt: p, priority: 1.0}\n"
    )
    store.submit(load_plan(tmp_path / "p.yaml"))
    assert store.task_detail(store.find_task_id("b")).priority == 1
