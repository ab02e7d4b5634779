"""Messages against a real SQLite file: answering questions and checkpoints, and bad answers."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from cw.agents.prompts import answers_prompt, review_prompt
from cw.errors import NotFound, UsageError
from cw.service.notify import notify_later
from cw.settings import Settings
from cw.store import (
    Answer,
    AttemptResult,
    Claim,
    MergeReport,
    Question,
    Store,
    TaskBrief,
    answers,
)
from cw.store.records import Bounce
from tests.conftest import dump_database
from tests.factories import spec

ASKS = [
    Question("db", "SQLite or Postgres?", ["sqlite", "postgres"]),
    Question("name", "What is the table called?"),
]
OPTIONS = [{"id": "a", "name": "Use SQLite"}, {"id": "b", "name": "Use Postgres"}]


def submit(store: Store, edges: dict[str, list[str]], kinds: dict[str, str] | None = None,
           options: dict[str, list[dict[str, str]]] | None = None) -> dict[str, int]:  # fmt: skip
    plan = spec(edges, kinds=kinds)
    for task in plan.tasks():
        if task.key in (options or {}):
            task.extra["options"] = (options or {})[task.key]
    store.submit(plan)
    return {t["key"]: t["id"] for t in store.task_rows()}


def states(store: Store) -> dict[str, str]:
    return {t["key"]: t["state"].value for t in store.task_rows()}


def dump(store: Store) -> list[tuple[str, tuple[object, ...]]]:
    return dump_database(store.engine)


def ask(store: Store, questions: list[Question], session: str | None = "s-1") -> Claim:
    """Run the only ready task's attempt to an end with questions."""
    (claim,) = store.claim_ready_tasks()
    assert store.start_attempt(claim, worker="w", host="h", lease_seconds=30)
    result = AttemptResult(outcome="questions", questions=questions, session_id=session)
    assert store.finish_attempt(claim, result, "claude")
    return claim


def merge(store: Store, claim: Claim) -> None:
    """Run a claimed attempt through its merge, on a branch of its own."""
    assert store.start_attempt(claim, worker="w", host="h", lease_seconds=30)
    store.record_workspace(claim.task_id, f"cw/task/{claim.task_id}", f"/wt/{claim.task_id}", "b")
    assert store.finish_attempt(claim, AttemptResult(outcome="done", head_sha="h1"), "claude")
    assert store.begin_merge(claim)
    assert store.finish_merge(claim, MergeReport(sha="m1"))


def pending_ids(store: Store) -> list[int]:
    return [m["id"] for m in store.message_rows(pending=True)]


def test_questions_are_messages_with_an_event_each(store: Store) -> None:
    key = submit(store, {"a": []})
    ask(store, ASKS)
    rows = store.message_rows()
    assert [(r["task"], r["author"], r["extra_id"], r["state"]) for r in rows] == [
        ("a", "agent", "db", "pending"),
        ("a", "agent", "name", "pending"),
    ]
    assert {r["agent"] for r in rows} == {store.agent_of(key["a"])} != {None}
    created = [e for e in store.events(key["a"]) if e["kind"] == "message.created"]
    assert [e["data"] for e in created] == [{"message_id": r["id"]} for r in rows]
    detail = store.message_detail(rows[0]["id"])
    assert (detail["task_name"], detail["task_state"]) == ("task a", "waiting")
    assert set(detail) == set(rows[0]) | {"task_name", "task_state"}


def test_the_last_answer_resumes_the_session_with_every_answer(store: Store) -> None:
    key = submit(store, {"a": []})
    first = ask(store, ASKS)
    q1, q2 = pending_ids(store)
    assert store.answer_message(q1, "2") == "1 more question of task a is pending"
    assert states(store) == {"a": "waiting"}
    assert store.answer_message(q2, "  ledger  ") == "task a resumes its agent's session"
    assert states(store) == {"a": "ready"}
    assert [m["answer"] for m in store.message_rows()] == ["postgres", "ledger"]
    (claim,) = store.claim_ready_tasks()
    assert claim == Claim(key["a"], first.attempt + 1)
    ws = store.start_attempt(claim, worker="w", host="h", lease_seconds=-1)
    assert ws is not None and ws.session_id == "s-1"
    assert [(a.id, a.answer) for a in ws.answers] == [("db", "postgres"), ("name", "ledger")]
    taken = store.start_attempt(claim, worker="w2", host="h", lease_seconds=30)
    assert taken is not None and taken.answers == ws.answers, "a take-over hears them again"
    taken_claim = Claim(claim.task_id, taken.attempt)
    store.finish_attempt(taken_claim, AttemptResult(outcome="interrupted"), "command")
    (later,) = store.claim_ready_tasks()
    again = store.start_attempt(later, worker="w", host="h", lease_seconds=30)
    assert again is not None and again.answers == ws.answers, "an unfinished run's, again"
    store.finish_attempt(later, AttemptResult(outcome="failed", error="x"), "command")
    store.retry_task(key["a"])
    (last,) = store.claim_ready_tasks()
    retried = store.start_attempt(last, worker="w", host="h", lease_seconds=30)
    assert retried is not None and retried.answers == ws.answers, "a failed run's, again"
    store.finish_attempt(last, AttemptResult(outcome="questions", questions=ASKS[:1]), "command")
    q3 = pending_ids(store)[-1]
    store.answer_message(q3, "1")
    (after,) = store.claim_ready_tasks()
    heard = store.start_attempt(after, worker="w", host="h", lease_seconds=30)
    assert heard is not None and [a.answer for a in heard.answers] == ["sqlite"], (
        "answers an attempt heard to its end are not heard again"
    )
    kinds = [e["kind"] for e in store.events(key["a"]) if e["kind"].startswith("message.")]
    # delivered to four attempts: the first, its take-over, the unfinished one, the retried one
    first_round = ["message.created"] * 2 + ["message.answered"] * 2 + ["message.delivered"] * 8
    assert kinds == [*first_round, "message.created", "message.answered", "message.delivered"]


def test_an_agent_that_asks_nothing_still_leaves_a_question_to_answer(store: Store) -> None:
    submit(store, {"a": []})
    ask(store, [], session=None)
    (message,) = store.message_rows(pending=True)
    assert "gave no question" in message["body"]
    assert store.answer_message(message["id"], "go on") == "task a runs again with your answers"


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        ("   ", "message {id}: the answer is empty"),
        ("", "message {id}: the answer is empty"),
    ],
)
def test_an_empty_answer_is_refused_and_changes_nothing(
    store: Store, answer: str, error: str
) -> None:
    submit(store, {"a": []})
    ask(store, ASKS[:1])
    (message_id,) = pending_ids(store)
    before = dump(store)
    with pytest.raises(UsageError, match=error.format(id=message_id)):
        store.answer_message(message_id, answer)
    assert dump(store) == before


def test_an_unknown_or_answered_message_is_refused_and_changes_nothing(store: Store) -> None:
    submit(store, {"a": []})
    ask(store, ASKS[:1])
    (message_id,) = pending_ids(store)
    store.answer_message(message_id, "sqlite")
    before = dump(store)
    with pytest.raises(NotFound, match="no message 99: see `cw message list`"):
        store.answer_message(99, "yes")
    with pytest.raises(NotFound, match="no message 99"):
        store.message_detail(99)
    with pytest.raises(UsageError, match=f"message {message_id} was already answered \\('sqlite'"):
        store.answer_message(message_id, "postgres")
    assert dump(store) == before


def test_a_decision_needs_one_of_its_options_and_records_the_choice(store: Store) -> None:
    key = submit(store, {"pick": [], "build": ["pick"]}, kinds={"pick": "checkpoint:decision"},
                 options={"pick": OPTIONS})  # fmt: skip
    assert store.claim_ready_tasks() == []
    (message,) = store.message_rows(pending=True)
    assert message["options"] == ["a: Use SQLite", "b: Use Postgres"]
    before = dump(store)
    options = r"one of the options: a \(Use SQLite\), b \(Use Postgres\)"
    with pytest.raises(UsageError, match=options):
        store.answer_message(message["id"], "MySQL")
    assert dump(store) == before
    said = store.answer_message(message["id"], "B")
    assert said == "checkpoint pick decided (b: Use Postgres): its dependents proceed"
    assert states(store) == {"pick": "done", "build": "ready"}
    assert store.task_detail(key["pick"])["extra"]["answer"] == "b: Use Postgres"
    assert store.message_detail(message["id"])["answer"] == "b: Use Postgres"


@pytest.mark.parametrize("word", ["approved", "Yes", "OK.", "done"])
def test_an_approved_checkpoint_is_done_and_its_dependents_proceed(store: Store, word: str) -> None:
    submit(store, {"check": [], "next": ["check"]}, kinds={"check": "checkpoint:human-verify"})
    store.claim_ready_tasks()
    (message_id,) = pending_ids(store)
    said = store.answer_message(message_id, word)
    assert said == "checkpoint check approved: its dependents proceed"
    assert states(store) == {"check": "done", "next": "ready"}


def test_comments_send_the_checked_work_back_and_the_checkpoint_asks_again(
    store: Store,
) -> None:
    key = submit(store, {"build": [], "check": ["build"], "next": ["check"]},
                 kinds={"check": "checkpoint:human-verify"})  # fmt: skip
    (claim,) = store.claim_ready_tasks()
    merge(store, claim)
    assert store.claim_ready_tasks() == []
    (first,) = pending_ids(store)
    said = store.answer_message(first, "the button is blue, make it red")
    assert said == (
        "checkpoint check sent back to build with your comments; it asks again once that "
        "work is merged"
    )
    assert states(store) == {"build": "ready", "check": "pending", "next": "pending"}
    bounce = store.task_detail(key["build"])["bounce"]
    assert bounce["kind"] == "review" and bounce["comments"] == "the button is blue, make it red"
    (again,) = store.claim_ready_tasks()
    assert again == Claim(key["build"], claim.attempt + 1)
    merge(store, again)
    assert store.task_detail(key["build"])["bounce"] == {}
    assert store.claim_ready_tasks() == [], "the checkpoint opens again instead"
    (second,) = pending_ids(store)
    assert second != first
    store.answer_message(second, "approved")
    assert states(store) == {"build": "done", "check": "done", "next": "ready"}


def test_comments_with_no_agent_work_before_the_checkpoint_are_refused(store: Store) -> None:
    submit(store, {"act": []}, kinds={"act": "checkpoint:human-action"})
    store.claim_ready_tasks()
    (message_id,) = pending_ids(store)
    before = dump(store)
    with pytest.raises(UsageError, match=r"no agent's work before it .* answer `done`"):
        store.answer_message(message_id, "not yet")
    assert dump(store) == before


def test_a_task_that_has_not_started_can_be_edited(store: Store) -> None:
    key = submit(store, {"a": [], "b": ["a"]})
    store.edit_task(key["b"], prompt="do b better", priority=5)
    detail = store.task_detail(key["b"])
    assert (detail["prompt"], detail["priority"]) == ("do b better", 5)
    assert store.events(key["b"])[-1]["kind"] == "task.edited"
    store.claim_ready_tasks()
    before = dump(store)
    with pytest.raises(UsageError, match="task a is queued: only a task that has not started"):
        store.edit_task(key["a"], priority=1)
    with pytest.raises(UsageError, match="the prompt would be empty"):
        store.edit_task(key["b"], prompt="  ")
    with pytest.raises(UsageError, match="nothing to change"):
        store.edit_task(key["b"])
    with pytest.raises(NotFound, match="no task 99"):
        store.edit_task(99, priority=1)
    assert dump(store) == before


def test_only_pending_messages_not_yet_notified_are_due(store: Store) -> None:
    submit(store, {"a": []})
    ask(store, ASKS)
    q1, q2 = pending_ids(store)
    assert store.unnotified_messages() == [q1, q2]
    store.mark_notified(q1, "exit code 0")
    store.answer_message(q2, "x")
    assert store.unnotified_messages() == []


def test_options_are_named_by_text_before_id_and_several_by_commas() -> None:
    numbers = answers.options_of(["1", "3", "5"])
    assert answers.choose(numbers, "3", multi=False) == [numbers[1]], "the text wins over the id"
    lettered = answers.options_of(["a: Use SQLite", "b: Use Postgres"], OPTIONS)
    assert [o.id for o in lettered] == ["a", "b"]
    assert answers.choose(lettered, "use postgres", multi=False) == [lettered[1]]
    assert answers.choose(lettered, "a, b", multi=True) == lettered
    assert answers.choose(lettered, "a, z", multi=True) == []
    assert answers.choose(lettered, "a, b", multi=False) == []
    assert answers.choose(lettered, "2", multi=False) == [lettered[1]], "a declared id's number"
    plain = answers.options_of(["sqlite", "postgres", "both"])  # an agent's: 1, 2, 3 or a, b, c
    assert answers.choose(plain, "B", multi=False) == answers.choose(plain, "2", multi=False)
    assert answers.choose(plain, "a, c", multi=True) == [plain[0], plain[2]]
    swapped = answers.options_of(["x", "y"], [{"id": "2"}, {"id": "1"}])
    assert answers.choose(swapped, "1", multi=False) == [swapped[1]], "an id before a number"
    assert answers.is_approval(" Approved! ") and not answers.is_approval("approved, but")


def test_the_answers_prompt_carries_each_question_and_answer() -> None:
    brief = TaskBrief(key="a", name="task a", prompt="do a", branch="cw/task/1-a")
    heard = [Answer("db", "SQLite or Postgres?", ["sqlite", "postgres"], "postgres")]
    resumed = answers_prompt(brief, heard, resuming=True)
    assert "**Question (db):** SQLite or Postgres?" in resumed
    assert "Options: sqlite; postgres" in resumed and "**Answer:** postgres" in resumed
    assert "## What to do" not in resumed, "the session already holds the brief"
    fresh = answers_prompt(brief, heard, resuming=False)
    assert "## What to do" in fresh and "**Answer:** postgres" in fresh
    review = Bounce("review", checkpoint="check", question="Is it blue?", comments="make it red")
    text = review_prompt(brief, review, ["a.css"])
    assert "checkpoint check" in text and "make it red" in text and "`a.css`" in text


def test_a_slow_hook_runs_in_the_background_and_still_sees_every_message(
    database_url: str, tmp_path: Path
) -> None:
    """The merge worker hands the hook to a thread: a slow hook never holds up the next merge."""
    (tmp_path / ".cw").mkdir()
    out = tmp_path / "hook.jsonl"
    env = {"CW_REPO": str(tmp_path), "CW_DATABASE_URL": database_url,
           "CW_NOTIFY_COMMAND": f"sleep 1; cat >> '{out}'"}  # fmt: skip
    settings = Settings.load(env=env)
    store = Store.open(settings.db_url)
    try:
        submit(store, {"a": []})
        ask(store, ASKS)
        started = time.monotonic()
        notify_later(settings, store)
        assert time.monotonic() - started < 0.9, "the caller does not wait for the hook (1 s)"
        deadline = time.monotonic() + 15
        while store.unnotified_messages() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert store.unnotified_messages() == []
        assert len(out.read_text().splitlines()) == 2, "one JSON per message"
    finally:
        store.close()


def test_retrying_a_task_the_merge_gave_up_on_settles_cws_notice(store: Store) -> None:
    submit(store, {"a": []})
    (claim,) = store.claim_ready_tasks()
    conflict = MergeReport(conflict_files=["x.py"], output="CONFLICT (content)")
    for expect_back in (True, False):  # sent back once, then given up on (max_bounces = 1)
        assert store.start_attempt(claim, worker="w", host="h", lease_seconds=30)
        done = AttemptResult(outcome="done", head_sha=f"h{claim.attempt}")
        assert store.finish_attempt(claim, done, "claude")
        assert store.begin_merge(claim)
        back = store.bounce(claim, conflict, intent=[], max_bounces=1)
        assert (back is not None) is expect_back
        claim = back or claim
    assert states(store)["a"] == "failed"
    (notice,) = store.message_rows(pending=True)
    assert notice["author"] == "cw"
    store.retry_task(claim.task_id)
    assert store.message_detail(notice["id"])["state"] == "answered"
    assert store.message_detail(notice["id"])["answer"] == "retried"
    assert store.message_rows(pending=True) == []
