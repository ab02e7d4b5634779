"""A plan's state in one word, as every reader says it: `cw status`, `cw plan list`, the page
and the file UI's STATUS.md read it from the same roll-up, so they cannot disagree."""

from __future__ import annotations

from pathlib import Path

import pytest

from cw.fsui import mirror
from cw.plans.load import load_plan
from cw.store import AttemptResult, Claim, Store, views
from cw.store.selects import Glance
from cw.store.snapshot import Snapshot

#: One task a plan, but 01-01 (two) and 01-05 (one waiting on 01-04's task).
PLANS = """
initiative: states
phases:
  - id: "01"
    plans:
      - id: "01-01"
        tasks:
          - {id: broke, prompt: p}
          - {id: rest, prompt: p}
      - id: "01-02"
        tasks: [{id: idle, prompt: p}]
      - id: "01-03"
        tasks: [{id: busy, prompt: p}]
      - id: "01-04"
        tasks: [{id: again, prompt: p}]
      - id: "01-05"
        tasks: [{id: after, prompt: p, depends_on: [again]}]
"""

#: What each plan is once broke and again failed, again was retried and busy runs.
EXPECTED = {
    "01-01": "failing",  # broke failed while rest is ready
    "01-02": "not started",
    "01-03": "running",
    "01-04": "running",  # ready again, but it ran once: started, as `cw plan list` says
    "01-05": "not started",  # pending on again, which goes on
}


def claim(store: Store, key: str) -> Claim:
    claimed = store.claim_task(store.find_task_id(key))
    assert store.start_attempt(claimed, worker="w", host="h", lease_seconds=60)
    return claimed


def fail(store: Store, key: str) -> None:
    result = AttemptResult(outcome="failed", error="it broke")
    assert store.finish_attempt(claim(store, key), result, "command")


@pytest.fixture
def district(store: Store, tmp_path: Path) -> Store:
    (tmp_path / "plans.yaml").write_text(PLANS, encoding="utf-8")
    store.submit(load_plan(tmp_path / "plans.yaml"))
    fail(store, "broke")
    fail(store, "again")
    store.retry_task(store.find_task_id("again"))
    claim(store, "busy")
    return store


def test_cw_status_says_each_plans_state_as_cw_plan_list_does(district: Store) -> None:
    status = {p.plan: p.state for p in views.status(district).plans}
    assert status == EXPECTED
    assert {r.plan: r.state for r in district.plan_rows()} == status
    (plan,) = [p for p in views.status(district).plans if p.plan == "01-04"]
    assert plan.started and plan["state"] == "running", "a field of the row, in its --json"


def test_the_file_uis_overview_says_each_plans_state(district: Store) -> None:
    overview = Snapshot(district.engine).overview(10)
    assert {p.plan: p.state for p in overview.plans} == EXPECTED
    assert [(p.plan, p.done, p.total) for p in overview.plans][:2] == [
        ("01-01", 0, 2),
        ("01-02", 0, 1),
    ]
    text = mirror.status_doc(overview).text
    assert "| initiative | phase | plan | done | state |" in text
    assert "| states | 01 | 01-01 | 0/2 | failing |" in text
    assert "| states | 01 | 01-04 | 0/1 | running |" in text


@pytest.mark.sqlite_only
def test_a_glance_at_a_sqlite_district_says_the_same_states(
    district: Store, database_url: str
) -> None:
    reader = Glance.open(database_url)
    assert reader is not None
    try:
        assert {p.plan: p.state for p in views.status(reader).plans} == EXPECTED
    finally:
        reader.close()
