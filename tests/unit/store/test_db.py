"""Engines, migrations and the store's races, on SQLite or (CW_TEST_DATABASE_URL) PostgreSQL."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from sqlalchemy import func, select

from cw.errors import ConfigError, UsageError
from cw.store import AttemptResult, Claim, MergeReport, Question, Store, base, db, glance
from cw.store.base import lock_task
from cw.store.models import Task, TaskDependency
from tests.factories import spec


def race(url: str, jobs: list[Callable[[Store], Any]]) -> list[Any]:
    """Run each job at the same moment, each on its own store (its own connections)."""
    stores = [Store.open(url) for _ in jobs]
    barrier = threading.Barrier(len(jobs))

    def run(job: Callable[[Store], Any], store: Store) -> Any:
        barrier.wait()
        return job(store)

    try:
        with ThreadPoolExecutor(len(jobs)) as pool:
            futures = [
                pool.submit(run, job, store) for job, store in zip(jobs, stores, strict=True)
            ]
        return [f.result() for f in futures]
    finally:
        for store in stores:
            store.close()


def to_merging(store: Store) -> list[Claim]:
    """Every ready task run to an attempt that is done, its merge begun."""
    claims = store.claim_ready_tasks()
    for claim in claims:
        assert store.start_attempt(claim, worker="w", host="h", lease_seconds=30)
        assert store.finish_attempt(claim, AttemptResult(outcome="done", head_sha="a"), "command")
        assert store.begin_merge(claim)
    return claims


def test_a_postgresql_url_without_its_driver_is_a_config_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "psycopg", None)  # what an install without the extra sees
    with pytest.raises(ConfigError, match=r"psycopg driver is not installed: pip install"):
        db.make_engine("postgresql://cw@db.example/cw")


def test_an_unreachable_postgresql_server_is_one_line_without_the_password() -> None:
    engine = db.make_engine("postgresql://cw:hunter2@127.0.0.1:1/cw")
    with pytest.raises(ConfigError) as caught:
        db.migrate(engine)
    said = str(caught.value)
    assert said.startswith(
        "CW_DATABASE_URL: cannot reach the database postgresql+psycopg://cw:***@"
    )
    assert "hunter2" not in said and "\n" not in said


def test_several_opens_of_an_empty_database_migrate_it_once(database_url: str) -> None:
    revisions = race(database_url, [lambda s: db.schema_revision(s.engine)] * 4)
    assert revisions == [glance.SCHEMA_REVISION] * 4


def test_two_dependencies_merged_at_once_make_their_dependent_ready(database_url: str) -> None:
    store = Store.open(database_url)
    for i in range(5):
        store.submit(spec({"a": [], "b": [], "c": ["a", "b"]}, name=f"i{i}"))
    initiative = {t["id"]: t["initiative"] for t in store.task_rows()}
    merging = to_merging(store)
    for i in range(5):
        both = [c for c in merging if initiative[c.task_id] == f"i{i}"]
        race(database_url, [lambda s, c=c: s.finish_merge(c, MergeReport(sha="m")) for c in both])
    states = {(t["initiative"], t["key"]): t["state"].value for t in store.task_rows()}
    assert {k: v for k, v in states.items() if k[1] == "c"} == {
        (f"i{i}", "c"): "ready" for i in range(5)
    }
    store.close()


def test_two_questions_answered_at_once_make_their_task_ready(database_url: str) -> None:
    store = Store.open(database_url)
    store.submit(spec({f"t{i}": [] for i in range(5)}))
    asks = [Question("x", "x?"), Question("y", "y?")]
    claims = store.claim_ready_tasks()
    for claim in claims:
        assert store.start_attempt(claim, worker="w", host="h", lease_seconds=30)
        outcome = AttemptResult(outcome="questions", questions=asks)
        assert store.finish_attempt(claim, outcome, "command")
    for claim in claims:
        pending = [m["id"] for m in store.message_rows() if m["task_id"] == claim.task_id]
        race(database_url, [lambda s, m=m: s.answer_message(m, "yes") for m in pending])
        assert store.task_state(claim.task_id).value == "ready"
    store.close()


def test_two_answers_to_one_question_record_one(database_url: str) -> None:
    store = Store.open(database_url)
    store.submit(spec({"a": []}))
    (claim,) = store.claim_ready_tasks()
    assert store.start_attempt(claim, worker="w", host="h", lease_seconds=30)
    outcome = AttemptResult(outcome="questions", questions=[Question("x", "x?")])
    assert store.finish_attempt(claim, outcome, "command")
    (message,) = store.message_rows(pending=True)

    def answer(s: Store, text: str) -> str:
        try:
            return s.answer_message(message["id"], text)
        except UsageError as exc:
            return f"refused: {exc}"

    said = race(database_url, [lambda s: answer(s, "one"), lambda s: answer(s, "two")])
    assert sorted(s.startswith("refused") for s in said) == [False, True]
    assert store.message_detail(message["id"])["answer"] in ("one", "two")
    store.close()


def test_one_plan_submitted_twice_at_once_is_stored_once(database_url: str) -> None:
    def submit(s: Store) -> str:
        return f"added {len(s.submit(spec({'a': [], 'b': ['a']})).new_tasks)}"

    said = race(database_url, [submit, submit])
    assert sorted(said) == ["added 0", "added 2"]
    store = Store.open(database_url)
    assert sorted(row["key"] for row in store.task_rows()) == ["a", "b"]
    store.close()


def test_a_read_sees_one_snapshot_of_the_database_from_start_to_end(database_url: str) -> None:
    """A read of several statements (a plan's tasks, then their edges) never meets a submit
    that commits between them: on PostgreSQL the first statement fixes what the rest see."""
    store, other = Store.open(database_url), Store.open(database_url)
    try:
        store.submit(spec({"a": []}))
        with store._read() as s:
            before = s.scalar(select(func.count(Task.id)))
            other.submit(spec({"b": [], "c": ["b"]}, name="other"))
            assert s.scalar(select(func.count(Task.id))) == before == 1
            assert s.scalar(select(func.count(TaskDependency.task_id))) == 0
        assert len(store.task_rows()) == 3, "the next read sees the submit"
    finally:
        store.close()
        other.close()


def test_recording_a_session_locks_the_task_first_as_the_heartbeat_does(database_url: str) -> None:
    """The agent's session id is recorded from its output while the heartbeat renews the lease;
    both take the task's row lock first, so they wait for each other instead of deadlocking."""
    if not database_url.startswith("postgresql"):
        pytest.skip("row locks: PostgreSQL (SQLite serializes every write)")
    store, other = Store.open(database_url), Store.open(database_url)
    try:
        store.submit(spec({"a": []}))
        (claim,) = store.claim_ready_tasks()
        assert store.start_attempt(claim, worker="w", host="h", lease_seconds=30)
        recorded = threading.Event()

        def record() -> None:
            store.record_session(claim, "session-1")
            recorded.set()

        thread = threading.Thread(target=record)
        with other._write() as s:
            lock_task(s, claim.task_id)  # a heartbeat holds the task's row
            thread.start()
            assert not recorded.wait(1.0), "it touched the run or the agent before the task"
        thread.join(10)
        assert recorded.is_set()
        assert store.task_detail(claim.task_id)["session_id"] == "session-1"
    finally:
        store.close()
        other.close()


def test_a_retry_racing_a_dependencys_failure_leaves_the_dependent_blocked(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """d waits on x (failed) and y (running). Retrying x read y as running and freed d while
    y's failure, committed meanwhile, found no pending d to block: d waited for ever."""
    if not database_url.startswith("postgresql"):
        pytest.skip("concurrent writers: PostgreSQL (SQLite serializes every write)")
    store, other = Store.open(database_url), Store.open(database_url)
    try:
        store.submit(spec({"x": [], "y": [], "d": ["x", "y"]}))
        claims = {store.task_detail(c.task_id).key: c for c in store.claim_ready_tasks()}
        for claim in claims.values():
            assert store.start_attempt(claim, worker="w", host="h", lease_seconds=30)
        store.finish_attempt(claims["x"], AttemptResult(outcome="failed", error="x"), "command")
        checked = threading.Event()
        real = base.has_bad_dependency

        def slow(s: Any, task_id: int) -> bool:
            bad = real(s, task_id)
            if threading.current_thread().name == "retry":
                checked.set()
                time.sleep(1.0)  # y fails now
            return bad

        monkeypatch.setattr(base, "has_bad_dependency", slow)
        retry = threading.Thread(target=store.retry_task, args=(claims["x"].task_id,), name="retry")
        retry.start()
        assert checked.wait(10)
        other.finish_attempt(claims["y"], AttemptResult(outcome="failed", error="y"), "command")
        retry.join(10)
        states = {key: store.task_state(c.task_id).value for key, c in claims.items()}
        d = store.find_task_id("d")
        assert (states["x"], states["y"], store.task_state(d).value) == (
            "ready",
            "failed",
            "blocked",
        )
    finally:
        store.close()
        other.close()
