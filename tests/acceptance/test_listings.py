"""What the listings show, end to end: the real `cw` command against a district whose states a
test drives through the store (SQLite, or PostgreSQL with CW_TEST_DATABASE_URL)."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import sqlalchemy as sa

from cw.store import AttemptResult, MergeReport, Store
from cw.store.records import Claim
from tests.conftest import CW, store_url

#: Text people wrote, or tools printed, that rich would read as markup.
NAME = "ledger [bold]schema[/] for [eur-2]"
ERROR = (
    "git worktree add failed: [/tmp/wt/limited] already exists\n"
    "FAILED tests/test_x.py::test_total[eur-2] - assert 3 == 2"
)


def run_cw(repo: Path, *args: str) -> str:
    """``cw ARGS`` in ``repo``, piped; its output. No traceback, exit 0."""
    result = subprocess.run(
        [*CW, *args], cwd=repo, capture_output=True, text=True, timeout=120, env=dict(os.environ)
    )
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.fixture
def district(make_repo: Callable[[str], Path], cw_database: str) -> Iterator[Path]:
    """An initialised repository on the test database; its embedded broker stops after."""
    repo = make_repo("repo")
    run_cw(repo, "init")
    yield repo
    subprocess.run([*CW, "broker", "stop"], cwd=repo, capture_output=True, timeout=60)


@pytest.fixture
def store(district: Path) -> Iterator[Store]:
    opened = Store.open(store_url(district))
    yield opened
    opened.close()


def submit(repo: Path, initiative: str, tasks: str) -> None:
    """A YAML plan of ``initiative`` with ``tasks`` (its YAML list), submitted, not sent."""
    (repo / "plan.yaml").write_text(f"initiative: {json.dumps(initiative)}\ntasks:\n{tasks}")
    run_cw(repo, "submit", "plan", "plan.yaml", "--no-dispatch", "--new-initiative")


def started(store: Store, lease_seconds: float = 60) -> dict[int, Claim]:
    """Every ready task claimed and started, by task id."""
    claims = {c.task_id: c for c in store.claim_ready_tasks()}
    for claim in claims.values():
        assert store.start_attempt(claim, worker="w", host="h", lease_seconds=lease_seconds)
    return claims


def to_merge(store: Store, claim: Claim) -> None:
    """The attempt succeeded; its merge begins."""
    assert store.finish_attempt(claim, AttemptResult(outcome="done"), "command")
    assert store.begin_merge(claim)


def merged(store: Store, claim: Claim) -> None:
    to_merge(store, claim)
    assert store.finish_merge(claim, MergeReport(sha="0" * 40))


def in_conflict(store: Store, claim: Claim) -> None:
    to_merge(store, claim)
    assert store.finish_merge(claim, MergeReport(conflict_files=["shared.txt"]))


def test_stored_text_is_shown_literally_by_every_listing(district: Path, store: Store) -> None:
    checkpoint = "{id: c, kind: 'checkpoint:human-verify', prompt: 'look at [bold]it[/]'}"
    submit(district, "pay[/]ments", f"  - {{id: a, name: {json.dumps(NAME)}, prompt: p}}\n"
           f"  - {{id: b, prompt: p, depends_on: [a]}}\n  - {checkpoint}\n")  # fmt: skip
    claims = started(store)
    (a,) = [c for c in claims.values() if c.key == "a"]
    assert store.finish_attempt(a, AttemptResult(outcome="failed", error=ERROR), "command")
    shown = {
        args: run_cw(district, *args)
        for args in (("status",), ("task", "list"), ("task", "show", "a"), ("agent", "list"))
    }
    assert "pay[/]ments" in shown["status",]
    for args in (("status",), ("task", "show", "a")):
        assert "[/tmp/wt/limited] already exists" in shown[args], shown[args]
    assert "test_total[eur-2]" in shown["task", "show", "a"]
    assert NAME in shown["task", "list"] and NAME in shown["task", "show", "a"]
    (message,) = json.loads(run_cw(district, "message", "list", "--json"))
    assert "look at [bold]it[/]" in run_cw(district, "message", "show", str(message["id"]))


def test_a_dead_agent_is_shown_unresponsive_and_its_runtime_stops(
    district: Path, store: Store
) -> None:
    submit(district, "dead", "  - {id: a, prompt: p}\n")
    started(store, lease_seconds=0.5)
    engine = sa.create_engine(store_url(district), poolclass=sa.NullPool)
    with engine.begin() as db:  # sent to the workers and started long ago, then nothing
        db.execute(sa.text("UPDATE tasks SET state_changed_at = state_changed_at - 600"))
        db.execute(sa.text("UPDATE agent_runs SET started_at = started_at - 600, "
                           "heartbeat_at = started_at - 590, lease_expires_at = 1"))  # fmt: skip
    engine.dispose()
    (agent,) = json.loads(run_cw(district, "agent", "list", "--json"))
    assert agent["state"] == "unresponsive" and agent["runtime_seconds"] == 10.0
    shown = " ".join(run_cw(district, "status").split())
    assert f"1 agent(s) unresponsive: {agent['name']} (task a)" in shown, shown
    detail = run_cw(district, "task", "show", "a")
    assert "unresponsive" in detail, detail
    assert json.loads(run_cw(district, "task", "list", "--json"))[0]["state"] == "running"


def test_merge_status_counts_bounces_per_task_not_per_key(district: Path, store: Store) -> None:
    """Two initiatives' `schema`, merged once each, never bounced; a retried conflict is no
    bounce; a bounce is named with its initiative when its key repeats."""
    submit(district, "one", "  - {id: schema, prompt: p}\n  - {id: other, prompt: p}\n")
    submit(district, "two", "  - {id: schema, prompt: p}\n")
    claims = started(store)
    one_schema, other, two_schema = sorted(claims.values(), key=lambda c: c.task_id)
    merged(store, one_schema)
    merged(store, two_schema)
    in_conflict(store, other)
    store.retry_task(other.task_id)  # a person's retry: no bounce
    merged(store, started(store)[other.task_id])
    status = json.loads(run_cw(district, "merge", "status", "--json"))
    assert status["bounces"] == [] and status["conflicts"] == []
    assert "bounced" not in run_cw(district, "merge", "status")


def test_merge_status_names_a_bounced_task_unambiguously(district: Path, store: Store) -> None:
    submit(district, "one", "  - {id: schema, prompt: p}\n")
    submit(district, "two", "  - {id: schema, prompt: p}\n")
    claims = started(store)
    first = min(claims.values(), key=lambda c: c.task_id)
    to_merge(store, first)
    assert store.bounce(first, MergeReport(conflict_files=["x"]), intent=[], max_bounces=3)
    status = json.loads(run_cw(district, "merge", "status", "--json"))
    task = f"schema (one, id:{first.task_id})"
    assert status["bounces"] == [{"task": task, "merge_attempts": 1, "bounces": 1}]
    assert status["conflicts"] == []  # its agent works on it again


def test_merge_status_lists_only_conflicts_that_still_wait(district: Path, store: Store) -> None:
    submit(district, "c", "  - {id: kept, prompt: p}\n  - {id: dropped, prompt: p}\n")
    claims = started(store)
    kept, dropped = sorted(claims.values(), key=lambda c: c.task_id)
    in_conflict(store, kept)
    in_conflict(store, dropped)
    store.cancel_task(dropped.task_id)
    status = json.loads(run_cw(district, "merge", "status", "--json"))
    assert [c["task"] for c in status["conflicts"]] == ["kept"]


def test_a_task_failed_for_bouncing_too_often_is_listed_by_its_last_conflict(
    district: Path, store: Store
) -> None:
    """Its newest merge is a conflict, the task failed: it was listed under neither."""
    submit(district, "b", "  - {id: often, prompt: p}\n")
    (claim,) = started(store).values()
    to_merge(store, claim)
    report = MergeReport(conflict_files=["shared.txt"])
    assert store.bounce(claim, report, intent=[], max_bounces=1) is not None
    again = replace(claim, attempt=claim.attempt + 1)
    assert store.start_attempt(again, worker="w", host="h", lease_seconds=60)
    to_merge(store, again)
    assert store.bounce(again, report, intent=[], max_bounces=1) is None
    assert store.task_state(claim.task_id).value == "failed"
    status = json.loads(run_cw(district, "merge", "status", "--json"))
    assert [c["task"] for c in status["conflicts"]] == ["often"]


def test_piped_listings_keep_every_row_on_one_line(district: Path, store: Store) -> None:
    key = "5-ledger-schema-and-migrations-for-the-payments-service"
    submit(district, "pipe", f"  - {{id: {key}, name: {'long name ' * 12!r}, prompt: p}}\n")
    started(store)
    path = "/home/alice/src/payments-service/.cw/worktrees/" + key + "-attempt-1"
    engine = sa.create_engine(store_url(district), poolclass=sa.NullPool)
    with engine.begin() as db:
        db.execute(sa.text("UPDATE tasks SET worktree = :p"), {"p": path})
        db.execute(sa.text("UPDATE agent_runs SET host = 'builder-7.example.com'"))
    engine.dispose()
    for args in (("agent", "list"), ("task", "list"), ("status",)):
        lines = run_cw(district, *args).splitlines()
        rows = [line for line in lines if key in line]
        assert rows and all("…" not in line for line in rows), lines
        wrapped = [line for line in lines if line.startswith("│") and not line[1:3].strip()]
        assert not wrapped, lines  # a row's second line starts with an empty cell
    assert f"{path} (on builder-7.example.com)" in run_cw(district, "agent", "list")


def test_a_pause_past_today_says_its_date(district: Path, store: Store) -> None:
    submit(district, "limited", "  - {id: a, prompt: p}\n")
    (claim,) = started(store).values()
    until = time.time() + 3 * 86400
    limited = AttemptResult(outcome="rate_limited", error="weekly limit", not_before=until)
    store.finish_attempt(claim, limited, "command")
    day = time.strftime("%Y-%m-%d", time.gmtime(until))
    assert f"until {day} " in run_cw(district, "limits", "list")
    assert f"until {day} " in " ".join(run_cw(district, "status").split())


def test_a_plans_state_is_shown_by_status_and_plan_list_says_what_failed(
    district: Path, store: Store
) -> None:
    """A failing or failed plan says in `cw plan list` (and `show`) how many of its tasks
    failed, the column kept aligned; `cw status` shows the same word, and its --json has it."""
    (district / "plan.yaml").write_text(
        'initiative: roll\nphases:\n  - id: "01"\n    plans:\n'
        '      - {id: "01-01", tasks: [{id: broke, prompt: p}, {id: rest, prompt: p}]}\n'
        '      - {id: "01-02", tasks: [{id: clash, prompt: p}]}\n'
        '      - {id: "01-03", tasks: [{id: fine, prompt: p}]}\n'
    )
    run_cw(district, "submit", "plan", "plan.yaml", "--no-dispatch")
    claims = {c.key: c for c in started(store).values()}
    assert store.finish_attempt(claims["broke"], AttemptResult(outcome="failed"), "command")
    in_conflict(store, claims["clash"])
    merged(store, claims["fine"])
    assert run_cw(district, "plan", "list").splitlines() == [
        "roll: phase 01: failing, 1/4 tasks done",
        "     1  01-01      failing (1 failed)         0/2  v1  plan.yaml",
        "     2  01-02      failed (1 in conflict)     0/1  v1  plan.yaml",
        "     3  01-03      done                       1/1  v1  plan.yaml",
    ]
    assert "  state       failing (1 failed), 0/2 tasks done" in run_cw(
        district, "plan", "show", "01-01"
    )
    status = json.loads(run_cw(district, "status", "--json"))
    assert [(p["plan"], p["state"]) for p in status["plans"]] == [
        ("01-01", "failing"),
        ("01-02", "failed"),
        ("01-03", "done"),
    ]
    lines = run_cw(district, "status").replace("┃", "│").splitlines()  # the heading's bars
    rows = [line.split("│")[1:-1] for line in lines]
    shown = {cells[2].strip(): cells[3].strip() for cells in rows if len(cells) == 8}
    assert shown == {"plan": "state", "01-01": "failing", "01-02": "failed", "01-03": "done"}
