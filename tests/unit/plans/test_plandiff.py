"""Comparing a plan read from disk with what the district holds (cw/plans/diff.py), and the
plans stored before plans had prints (migration 0005), on SQLite or PostgreSQL."""

from __future__ import annotations

import copy
import shutil
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from sqlalchemy import update

from cw.errors import UsageError
from cw.plans.diff import CHANGED, Held, PlanDiff, compare, merged_order, phase_order_of, rollup
from cw.plans.load import load_plan
from cw.plans.prints import FILE_DIGEST, _digest, digest, prints
from cw.plans.spec import InitiativeSpec, PhaseSpec
from cw.store import AttemptResult, MergeReport, Store, db
from cw.store.models import Plan
from tests.factories import HERE, spec
from tests.unit.plans.test_gsd_shapes import layout
from tests.unit.plans.test_gsd_shapes import plan as gsd_plan


def test_whitespace_and_the_plan_file_are_no_change_but_a_word_is() -> None:
    one = spec({"a": [], "b": ["a"]})
    rewrapped = copy.deepcopy(one)
    (plan,) = rewrapped.plans()
    plan.tasks[0].prompt = "  do\n\n   a \t"
    plan.objective = "objective\n"
    plan.extra["plan_file"] = "elsewhere/01-01-PLAN.md"
    assert prints(plan) == prints(one.plans()[0])
    plan.tasks[0].prompt = "do b"
    assert digest(plan) != digest(one.plans()[0])
    assert prints(plan)["tasks"][0] != prints(one.plans()[0])["tasks"][0]
    assert prints(plan)["tasks"][1] == prints(one.plans()[0])["tasks"][1]


def test_a_plans_digest_is_the_one_districts_hold() -> None:
    """Stored prints are compared with digests made now: the same content must digest as it
    always did (PRINTS_VERSION 1), in plain ASCII and beyond it."""
    plain = {"objective": "Do  it\nnow", "extra": {"k": [1, 2.5, None, True]}, "t": ("a", "b")}
    cjk = {"objective": "中文的\n句子", "context": "x \t y", "extra": {"ü": "é"}}
    assert _digest(plain) == "293b85954930f0dfef114d38acbc6d13"
    assert _digest(cjk) == "e9378fb8afd05b6d49b4f7cc82757929"


def test_an_inserted_decimal_phase_goes_between_its_neighbours() -> None:
    assert phase_order_of(["01", "01.1", "02"], ["01", "03", "02"]) == ["01", "01.1", "02", "03"]
    assert merged_order(["b", "d"], ["a", "b", "c"]) == ["a", "b", "c", "d"]
    assert phase_order_of(["ui", "api"], ["api"]) == ["ui", "api"]


def test_a_plan_rolls_up_its_tasks_states() -> None:
    assert rollup(["done"], True) == "done"
    assert rollup(["done", "running"], True) == "running"
    assert rollup(["pending", "ready"], False) == "not started"
    assert rollup(["ready", "cancelled"], False) == "not started"
    assert rollup(["done", "failed"], True) == "failed"
    assert rollup(["cancelled", "blocked"], False) == "cancelled"
    assert rollup(["done", "cancelled"], True) == "cancelled", "finished: nothing left to run"
    assert rollup(["done", "blocked"], True) == "blocked"
    assert rollup(["stopped"], True) == "needs you"
    assert rollup(["done", "review", "pending"], True) == "needs you"
    assert rollup(["review", "running"], True) == "running"


def test_a_plan_whose_task_ran_is_not_shown_as_not_started() -> None:
    # A retried task waiting for a worker again, or one cancelled after its retry.
    assert rollup(["ready", "pending"], True) == "running"
    assert rollup(["cancelled", "ready"], True) == "running"


def test_a_plan_with_a_failed_task_is_failing_while_the_rest_still_moves_then_failed() -> None:
    assert rollup(["failed", "running"], True) == "failing"
    assert rollup(["done", "conflict", "merging"], True) == "failing"
    assert rollup(["failed", "ready", "blocked"], True) == "failing"
    assert rollup(["failed", "review", "queued"], True) == "failing"
    # A failed task blocks what depends on it: a pending one waits on work elsewhere.
    assert rollup(["failed", "pending"], True) == "failing"
    # Failed once nothing moves without a person.
    assert rollup(["failed", "done", "blocked"], True) == "failed"
    assert rollup(["conflict", "waiting"], True) == "failed"
    # A conflict blocks nothing, and a task in review neither: the pending one may wait on it.
    assert rollup(["conflict", "pending"], True) == "failed"
    assert rollup(["failed", "review", "pending"], True) == "failed"


def test_plan_list_and_show_say_failing_until_the_rest_of_the_plan_has_finished(
    database_url: str,
) -> None:
    store = Store.open(database_url)
    store.submit(spec({"a": [], "b": [], "c": ["a"]}))
    first, second = store.claim_ready_tasks()
    for claim in (first, second):
        assert store.start_attempt(claim, worker="w", host="h", lease_seconds=30)
    store.finish_attempt(first, AttemptResult(outcome="failed", error="boom"), "command")
    (row,) = store.plan_rows()
    assert (row.states, row.state) == ({"failed": 1, "running": 1, "blocked": 1}, "failing")
    assert store.plan_detail(row.id).state == "failing"
    store.finish_attempt(second, AttemptResult(outcome="done"), "command")
    store.begin_merge(second)
    store.finish_merge(second, MergeReport(sha="def"))
    (row,) = store.plan_rows()
    assert (row.states, row.state) == ({"failed": 1, "done": 1, "blocked": 1}, "failed")
    assert store.plan_detail(row.id).state == "failed"
    store.close()


def test_a_plan_stored_before_prints_existed_is_compared_by_its_rows(database_url: str) -> None:
    store = Store.open(database_url)
    store.submit(spec({"a": [], "b": ["a"]}))
    plain = sa.create_engine(database_url, poolclass=sa.NullPool)  # SQLite: foreign keys off
    command.downgrade(db.alembic_config(plain), "0004")
    command.upgrade(db.alembic_config(plain), "head")
    plain.dispose()
    with store.engine.begin() as conn:
        assert conn.execute(update(Plan).values(prints=None)).rowcount == 1
    again = store.submit(spec({"a": [], "b": ["a"]}))
    assert again.nothing_new
    assert not again.settled, "no receipt: its prints come from rows that an edit changes"
    edited = spec({"a": [], "b": ["a"]})
    edited.tasks()[1].prompt = "do b better"
    diff = store.submit(edited)
    assert [(p.key, p.status, str(p.changes)) for p in diff.plans] == [
        ("01-01", CHANGED, "1 task edited (b)")
    ]
    assert store.submit(edited).settled, "updated, so its prints are kept"
    (row,) = store.plan_rows()
    assert row["version"] == 2 and row["tasks"] == 2
    store.close()


def test_several_refused_plans_are_one_line_and_nothing_is_stored(database_url: str) -> None:
    def two_plans(prompt: str) -> InitiativeSpec:
        plans = spec({"a": []}).plans() + spec({"b": []}).plans()
        plans[1].key = "01-02"
        for plan in plans:
            plan.tasks[0].prompt = f"{prompt} {plan.key}"
        return InitiativeSpec("two", "", [PhaseSpec("01", "phase", plans, {}, HERE)], "t.yaml")

    store = Store.open(database_url)
    store.submit(two_plans("do"))
    assert len(store.claim_ready_tasks()) == 2  # both plans have started
    before = store.task_rows()
    with pytest.raises(UsageError) as refused:
        store.submit(two_plans("redo"))
    assert str(refused.value).startswith(
        "2 plans refused, nothing stored: plan 01-01 (test.yaml): 1 task edited (a): its tasks "
        "have started"
    )
    assert "; plan 01-02 (test.yaml): 1 task edited (b)" in str(refused.value)
    assert "\n" not in str(refused.value)
    assert store.task_rows() == before
    store.close()


def test_what_a_submit_read_before_is_used_with_its_tasks_states_read_anew(
    database_url: str,
) -> None:
    store = Store.open(database_url)
    store.submit(spec({"a": [], "b": ["a"]}))
    edited = spec({"a": [], "b": ["a"]})
    edited.plans()[0].tasks[0].prompt = "something else"
    held = store.held(edited.name)  # as `cw submit plan` reads it before the transaction
    assert held is not None and held.tasks["a"].state.value == "ready"
    diff = compare(edited, held)  # and compares: the plan may still change
    assert [p.status for p in diff.plans] == [CHANGED]
    assert len(store.claim_ready_tasks()) == 1  # a starts in between
    with pytest.raises(UsageError, match="its tasks have started"):
        store.submit(edited, held, diff)  # compared again: a state changed
    with pytest.raises(UsageError, match="its tasks have started"):
        store.submit(edited, held)
    assert store.submit(spec({"a": [], "b": ["a"]}), held).nothing_new
    store.close()


def test_a_plan_whose_failed_task_was_retried_is_listed_as_running(database_url: str) -> None:
    store = Store.open(database_url)
    store.submit(spec({"a": []}))
    (claim,) = store.claim_ready_tasks()
    assert store.start_attempt(claim, worker="w", host="h", lease_seconds=30)
    store.finish_attempt(claim, AttemptResult(outcome="failed", error="boom"), "command")
    store.retry_task(claim.task_id)  # ready again, waiting for a worker: it has run once
    (row,) = store.plan_rows()
    assert (row.states, row.started, row.state) == ({"ready": 1}, True, "running")
    store.cancel_task(claim.task_id)
    (row,) = store.plan_rows()
    assert (row.states, row.state) == ({"cancelled": 1}, "cancelled")
    store.close()


def test_a_depends_on_taken_out_drops_the_edge_but_not_one_to_a_plan_not_read(
    database_url: str,
) -> None:
    def plans(b_after: list[str], with_a: bool = True) -> InitiativeSpec:
        found = spec({"a": []}).plans() + spec({"b": b_after}).plans()
        found[1].key = "01-02"
        kept = found if with_a else found[1:]
        return InitiativeSpec("two", "", [PhaseSpec("01", "phase", kept, {}, HERE)], "t.yaml")

    store = Store.open(database_url)
    store.submit(plans(["a"]))
    held = store.held("two")
    assert held is not None
    assert compare(plans([]), held).dropped_edges == [("b", "a")]
    # Plan 01-01 unreadable (skipped) or gone from disk: 01-02 keeps waiting for it.
    assert compare(plans([], with_a=False), held).dropped_edges == []
    store.submit(plans([]))
    assert {(row.key, row.state.value) for row in store.task_rows()} == {
        ("a", "ready"),
        ("b", "ready"),
    }
    store.close()


def test_an_edited_plan_whose_tasks_were_cancelled_says_they_stay_cancelled(
    database_url: str,
) -> None:
    store = Store.open(database_url)
    store.submit(spec({"a": [], "b": ["a"]}))
    store.cancel_task(store.find_task_id("a"))
    edited = spec({"a": [], "b": ["a"]})
    edited.plans()[0].tasks[1].prompt = "something else"
    diff = store.submit(edited)
    (change,) = diff.plans
    assert (
        change.line()
        == "changed 01-01: 2 tasks: 1 task edited (b) (1 cancelled task stays cancelled)"
    )
    assert {(row.key, row.state.value) for row in store.task_rows()} == {
        ("a", "cancelled"),
        ("b", "blocked"),
    }
    store.close()


def test_a_started_plan_read_differently_from_the_same_bytes_is_kept_not_refused(
    database_url: str,
) -> None:
    """A newer reader may read an unchanged file differently: that is no edit of finished
    work, so the submit keeps the stored plan instead of refusing everything."""
    store = Store.open(database_url)
    stored = spec({"a": []})
    stored.plans()[0].extra[FILE_DIGEST] = "bytes-1"
    store.submit(stored)
    assert len(store.claim_ready_tasks()) == 1  # it has started
    read_anew = spec({"a": [], "b": ["a"]})  # the same file, read as two tasks now
    read_anew.plans()[0].extra[FILE_DIGEST] = "bytes-1"
    (change,) = compare(read_anew, store.held("test")).plans
    assert change.line() == (
        "unchanged 01-01: 2 tasks (its file is as stored, but this cw reads it differently: "
        "kept as stored)"
    )
    assert store.submit(read_anew).nothing_new
    edited = spec({"a": [], "b": ["a"]})
    edited.plans()[0].extra[FILE_DIGEST] = "bytes-2"  # a person's edit
    with pytest.raises(UsageError, match="its tasks have started"):
        store.submit(edited)
    store.close()


# --- the order between GSD phases, on a resubmit -----------------------------------------


def submit_gsd(store: Store, path: Path) -> PlanDiff:
    """As ``cw submit plan`` does: the reader sees the plans the district holds."""
    held = Held(store.held)
    read = load_plan(path, known=held.known)
    return store.submit(read, held.get(read.name))


def waits_of(store: Store, task: str) -> set[str]:
    held = store.held("shop")
    assert held is not None
    return {dep for key, dep in held.edges if key == task}


def shop(root: Path, files: dict[str, str]) -> Path:
    (root / ".planning").mkdir(parents=True, exist_ok=True)
    (root / ".planning" / "PROJECT.md").write_text("# shop\n", encoding="utf-8")
    return layout(root, files)


def test_an_inserted_decimal_phase_holds_back_a_plan_naming_the_phase_before_it(
    tmp_path: Path, database_url: str
) -> None:
    """GSD inserts 02.1 once 03 is planned: 03-01, whose depends_on names 02-01 alone, waits
    for 02.1 too while it has not started, and the resubmit says so."""
    root = shop(tmp_path, {
        "02-api/02-01-PLAN.md": gsd_plan("02", "01"),
        "03-ui/03-01-PLAN.md": gsd_plan("03", "01", depends='depends_on: ["02-01"]\n'),
    })  # fmt: skip
    store = Store.open(database_url)
    try:
        submit_gsd(store, root)
        shop(root, {"02.1-fix/02.1-01-PLAN.md": gsd_plan("02.1", "01")})
        assert [p.line() for p in submit_gsd(store, root).plans] == [
            "unchanged 02-01: 1 task",
            "added 02.1-01: 1 task; waits for 02-01",
            "unchanged 03-01: 1 task; waits for 02.1-01",
        ]
        assert waits_of(store, "03-01-1") == {"02-01-1", "02.1-01-1"}
        again = submit_gsd(store, root)
        assert again.nothing_new and again.settled
    finally:
        store.close()


def test_a_new_phase_waits_for_the_previous_phase_the_district_holds_read_or_not(
    tmp_path: Path, database_url: str
) -> None:
    """Phase 02 submitted earlier and no longer on disk: a phase-03 plan naming only 01-01,
    alone in its PLAN.md or in the directory, still waits for 02's terminal plans."""
    root = shop(tmp_path, {
        "01-core/01-01-PLAN.md": gsd_plan("01", "01"),
        "02-api/02-01-PLAN.md": gsd_plan("02", "01"),
        "02-api/02-02-PLAN.md": gsd_plan("02", "02"),
    })  # fmt: skip
    new = {"03-ui/03-01-PLAN.md": gsd_plan("03", "01", depends='depends_on: ["01-01"]\n')}
    store = Store.open(database_url)
    try:
        submit_gsd(store, root)
        for folder in ("01-core", "02-api"):
            shutil.rmtree(root / ".planning" / "phases" / folder)
        shop(root, new)
        one = load_plan(root / ".planning/phases/03-ui/03-01-PLAN.md", known=Held(store.held).known)
        assert one.tasks()[0].depends_on == ["01-01-1", "02-01-1", "02-02-1"]
        lines = [p.line() for p in submit_gsd(store, root).plans]
        assert lines[0] == "added 03-01: 1 task; waits for 01-01, 02-01, 02-02"
        assert waits_of(store, "03-01-1") == {"01-01-1", "02-01-1", "02-02-1"}
    finally:
        store.close()


def test_a_district_stored_before_the_phase_order_always_held_takes_it_on_a_resubmit(
    tmp_path: Path, database_url: str
) -> None:
    """Stored when a depends_on replaced the wait for the previous phase: a task that still
    waits takes the waits it lacked; one already claimed cannot, which the diff notes; a plan
    that waits through one of its own phase gets no new edge."""
    root = shop(tmp_path, {
        "01-core/01-01-PLAN.md": gsd_plan("01", "01"),
        "02-api/02-01-PLAN.md": gsd_plan("02", "01"),
        "02-api/02-02-PLAN.md": gsd_plan("02", "02"),
        "03-ui/03-01-PLAN.md": gsd_plan("03", "01", depends='depends_on: ["01-01"]\n'),
        "03-ui/03-02-PLAN.md": gsd_plan("03", "02", depends='depends_on: ["02-01"]\n'),
        "03-ui/03-03-PLAN.md": gsd_plan("03", "03", depends='depends_on: ["03-01", "01-01"]\n'),
    })  # fmt: skip
    old = load_plan(root)
    by_key = {task.key: task for task in old.tasks()}
    by_key["03-01-1"].depends_on = ["01-01-1"]  # as cw stored them then
    by_key["03-02-1"].depends_on = ["02-01-1"]
    store = Store.open(database_url)
    try:
        store.submit(old)
        (first,) = store.claim_ready_tasks()
        assert store.start_attempt(first, worker="w", host="h", lease_seconds=30)
        assert store.finish_attempt(first, AttemptResult(outcome="done"), "command")
        assert store.begin_merge(first)
        assert store.finish_merge(first, MergeReport(sha="def"))
        claimed = sorted(claim.key for claim in store.claim_ready_tasks())
        assert claimed == ["02-01-1", "02-02-1", "03-01-1"], "03-01 ran beside phase 02"
        diff = submit_gsd(store, root)
        assert [p.line() for p in diff.plans if p.waits_for] == [
            "unchanged 03-02: 1 task; waits for 02-02"
        ]
        assert diff.late_edges == [
            ("03-01-1", "02-01-1", "queued"),
            ("03-01-1", "02-02-1", "queued"),
        ]
        assert waits_of(store, "03-02-1") == {"02-01-1", "02-02-1"}
        assert waits_of(store, "03-03-1") == {"03-01-1", "01-01-1"}
        assert not diff.settled, "03-01-1 does not wait as the plans ask"
    finally:
        store.close()
