"""Plans that grow: the real ``cw submit plan`` run again and again on one district adds what
is new, leaves what is the same, updates what has not started and refuses the rest."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from cw.store import Store
from tests.acceptance.test_cli import district, merge_order
from tests.conftest import CW, POSTGRES_URL, Processes, dump_store, store_url

__all__ = ["district"]  # the fixture this module's own builds on

#: Task 02-01-1 runs until the test creates RELEASE in the repository (at most 60 s).
AGENT = """\
mkdir -p out
echo "$CW_TASK_KEY" > "out/$CW_TASK_KEY.txt"
if [ "$CW_TASK_KEY" = 02-01-1 ]; then
  for _ in $(seq 600); do [ -f {release} ] && break; sleep 0.1; done
else sleep 0.2; fi
"""
RELEASE = "release-02-01-1"
TASK = '<task type="auto"><name>{name}</name><action>{action}</action></task>'


def plan(phase: str, number: str, *actions: str, front: str = "") -> str:
    tasks = "".join(TASK.format(name=f"step {i}", action=a) for i, a in enumerate(actions, 1))
    return f"---\nphase: {phase}\nplan: {number}\n{front}---\n<tasks>{tasks}</tasks>\n"


def write(repo: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = repo / ".planning" / "phases" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")


def cw(
    repo: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CW, *args],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=200,
        env={**os.environ, **(env or {})},
    )


def ok(repo: Path, *args: str) -> list[str]:
    out = cw(repo, *args)
    assert out.returncode == 0, out.stderr
    return out.stdout.splitlines()


def refused(repo: Path, *args: str) -> str:
    """Runs a submit that must be refused: exit 2, one line, and the database unchanged."""
    before = dump_store(store_url(repo))
    out = cw(repo, *args)
    assert out.returncode == 2, out.stdout + out.stderr
    assert len(out.stderr.splitlines()) == 1, out.stderr
    assert dump_store(store_url(repo)) == before
    return out.stderr.strip()


def task_keys(repo: Path) -> list[str]:
    return [row["key"] for row in json.loads(cw(repo, "task", "list", "--json").stdout)]


def depends_on(repo: Path, key: str) -> list[str]:
    shown: list[str] = json.loads(cw(repo, "task", "show", key, "--json").stdout)["depends_on"]
    return sorted(shown)


def state_of(repo: Path, key: str) -> str:
    state: str = json.loads(cw(repo, "task", "show", key, "--json").stdout)["state"]
    return state


@pytest.fixture
def repo(district: Path) -> Path:
    """test_cli's district, with an agent that is slow where a test needs a running task."""
    (district / "agent.sh").write_text(AGENT.format(release=district / RELEASE))
    return district


def wait_until(check: Callable[[], bool], seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.3)


PHASE_1 = {
    "01-core/01-01-PLAN.md": plan("01", "01", "Make the core.", "Test the core."),
    "01-core/01-02-PLAN.md": plan("01", "02", "Write the docs."),
}
PHASE_2 = {
    "02-api/02-01-PLAN.md": plan("02", "01", "Serve it.", "Test serving."),
    "02-api/02-02-PLAN.md": plan("02", "02", "Add a client.", front="depends_on: ['01-01']\n"),
}
HOTFIX = {"01.1-hotfix/01.1-01-PLAN.md": plan("01.1", "01", "Fix the core.")}
GAPS = {
    "02-api/02-03-PLAN.md": plan(
        "02", "03", "Close the gap.", front="depends_on: ['02-01']\ngap_closure: true\n"
    )
}


def test_the_gsd_flow_in_four_steps_adds_each_new_task_once_and_runs_all_in_order(
    repo: Path, processes: Processes
) -> None:
    env = dict(os.environ)
    processes.start([*CW, "worker", "-c", "2"], repo, env, "worker")
    processes.start([*CW, "worker", "--merge"], repo, env, "merge-worker")

    write(repo, PHASE_1)  # 1: phase 1 planned and executed
    assert "3 tasks in 2 plans" in ok(repo, "submit", "plan", ".planning")[0]
    ok(repo, "wait", "--timeout", "150")

    write(repo, PHASE_2)  # 2: phase 2, after phase 1 by order and by depends_on
    lines = ok(repo, "submit", "plan", ".planning")
    assert lines[0] == "cw: initiative 'repo' (id 1): 3 tasks added, 2 plans new, 2 plans unchanged"
    assert lines[1:3] == [
        "cw: added 02-01: 2 tasks; waits for 01-01, 01-02",
        "cw: added 02-02: 1 task; waits for 01-01, 01-02",
    ]
    wait_until(lambda: state_of(repo, "02-01-1") == "running")

    write(repo, HOTFIX)  # 3: a decimal phase inserted while phase 2 runs
    lines = ok(repo, "submit", "plan", ".planning")
    assert lines[0].startswith("cw: initiative 'repo' (id 1): 1 task added, 1 plan new")
    assert "cw: added 01.1-01: 1 task; waits for 01-01, 01-02" in lines
    assert "cw: note: task 02-01-1 is running already, so it does not wait for 01.1-01-1" in lines
    (repo / RELEASE).touch()
    ok(repo, "wait", "--timeout", "150")

    write(repo, GAPS)  # 4: a gap-closure plan at the end
    lines = ok(repo, "submit", "plan", ".planning")
    assert "cw: added 02-03: 1 task; waits for 02-01" in lines
    ok(repo, "wait", "--timeout", "150")

    assert sorted(task_keys(repo)) == sorted(
        ["01-01-1", "01-01-2", "01-02-1", "02-01-1", "02-01-2", "02-02-1", "01.1-01-1", "02-03-1"]
    )
    edges = {
        "02-01-1": ["01-01-2", "01-02-1"],
        "02-02-1": ["01-01-2", "01-02-1"],
        "01.1-01-1": ["01-01-2", "01-02-1"],
        "02-03-1": ["02-01-2"],
    }
    order = merge_order(repo)
    assert sorted(order) == sorted(task_keys(repo)), "every task merged once"
    for task, deps in edges.items():
        assert depends_on(repo, task) == deps
        assert all(order.index(dep) < order.index(task) for dep in deps), order
    again = ok(repo, "submit", "plan", ".planning")
    assert again == ["cw: initiative 'repo' (id 1): nothing new; 6 plans unchanged"]
    shown = [p["plan"] for p in json.loads(cw(repo, "status", "--json").stdout)["plans"]]
    assert shown == ["01-01", "01-02", "01.1-01", "02-01", "02-02", "02-03"], "in phase order"


def test_a_dry_run_changes_neither_the_database_nor_the_broker(repo: Path, redis_url: str) -> None:
    broker = {"CW_BROKER_URL": redis_url}
    write(repo, {**PHASE_1, **PHASE_2})
    assert cw(repo, "submit", "plan", ".planning", env=broker).returncode == 0
    client = redis.Redis.from_url(redis_url)
    queued = {key: client.dump(key) for key in client.keys()}
    assert queued, "the ready tasks were sent"
    before = dump_store(store_url(repo))
    write(repo, {**HOTFIX, "02-api/02-02-PLAN.md": plan("02", "02", "Add a better client.")})

    out = cw(repo, "submit", "plan", ".planning", "--dry-run", env=broker)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [
        "cw: dry run, nothing stored: initiative 'repo' (id 1): would change; 1 task to add",
        "  unchanged 01-01: 2 tasks",
        "  unchanged 01-02: 1 task",
        "  added     01.1-01: 1 task; waits for 01-01, 01-02",
        "  unchanged 02-01: 2 tasks; waits for 01.1-01",
        "  changed   02-02: 1 task: 1 task edited (02-02-1); waits for 01.1-01",
    ]
    assert dump_store(store_url(repo)) == before
    assert {key: client.dump(key) for key in client.keys()} == queued
    client.close()


def test_a_dry_run_that_would_be_refused_exits_2_and_starts_no_broker(
    repo: Path, redis_url: str
) -> None:
    write(repo, PHASE_1)
    sent = cw(repo, "submit", "plan", ".planning", env={"CW_BROKER_URL": redis_url})
    assert sent.returncode == 0, sent.stderr  # claimed: started, so its plan cannot change
    write(repo, {"01-core/01-02-PLAN.md": plan("01", "02", "Write other docs.")})
    line = refused(repo, "submit", "plan", ".planning", "--dry-run")
    assert line.startswith("cw: error: plan 01-02 (.planning/phases/01-core/01-02-PLAN.md): ")
    assert not (repo / ".cw" / "redis.sock").exists(), "no broker was started"


def test_resubmitting_the_same_files_is_a_no_op_and_rewrapping_is_no_change(repo: Path) -> None:
    write(repo, PHASE_1)
    ok(repo, "submit", "plan", ".planning", "--no-dispatch")
    before = dump_store(store_url(repo))
    rewrapped = plan("01", "02", "Write\n   the\n\n docs.").replace("<tasks>", "\n\n<tasks>\n")
    write(repo, {"01-core/01-02-PLAN.md": rewrapped})
    lines = ok(repo, "submit", "plan", ".planning")  # would start a broker if anything were new
    assert lines == ["cw: initiative 'repo' (id 1): nothing new; 2 plans unchanged"]
    assert dump_store(store_url(repo)) == before
    assert not (repo / ".cw" / "redis.sock").exists()


def test_a_changed_plan_that_has_not_started_is_updated_and_keeps_its_old_version(
    repo: Path,
) -> None:
    write(repo, PHASE_1)
    ok(repo, "submit", "plan", ".planning", "--no-dispatch")
    ids = {row["key"]: row["id"] for row in json.loads(cw(repo, "task", "list", "--json").stdout)}
    write(
        repo,
        {"01-core/01-01-PLAN.md": plan("01", "01", "Make the core.", "Test it well.", "Ship.")},
    )
    lines = ok(repo, "submit", "plan", ".planning", "--no-dispatch")
    assert lines[1] == "cw: changed 01-01: 3 tasks: 1 task added (01-01-3), 1 task edited (01-01-2)"
    rows = {r["key"]: r for r in json.loads(cw(repo, "task", "list", "--json").stdout)}
    assert rows["01-01-2"]["id"] == ids["01-01-2"], "updated in place"
    assert depends_on(repo, "01-01-3") == ["01-01-2"]
    shown = json.loads(cw(repo, "plan", "show", "01-01", "--json").stdout)
    assert shown["version"] == 2
    (old,) = shown["versions"]
    assert old["version"] == 1 and old["tasks"] == ["01-01-1", "01-01-2"]
    assert [t["prompt"] for t in old["content"]["tasks"]] == ["Make the core.", "Test the core."]
    text = "\n".join(ok(repo, "plan", "show", "01-01"))
    assert "version 1: replaced" in text and ".planning/phases/01-core/01-01-PLAN.md" in text

    write(repo, {"01-core/01-01-PLAN.md": plan("01", "01", "Make the core.")})  # fewer tasks
    ok(repo, "submit", "plan", ".planning", "--no-dispatch")
    assert sorted(task_keys(repo)) == ["01-01-1", "01-02-1"]
    assert json.loads(cw(repo, "plan", "show", "01-01", "--json").stdout)["version"] == 3


def test_a_plan_updated_in_place_keeps_a_persons_edit_of_a_task_the_files_left_alone(
    repo: Path,
) -> None:
    """An edit made in the file UI (prompt, priority) stands unless the files change that
    very task."""
    write(repo, PHASE_1)
    ok(repo, "submit", "plan", ".planning", "--no-dispatch")
    ids = {row["key"]: row["id"] for row in json.loads(cw(repo, "task", "list", "--json").stdout)}
    store = Store.open(store_url(repo))
    store.edit_task(ids["01-01-1"], prompt="Make the core, carefully.", priority=7)
    store.edit_task(ids["01-01-2"], prompt="Test the core, carefully.")
    store.close()
    write(repo, {"01-core/01-01-PLAN.md": plan("01", "01", "Make the core.", "Test it well.")})
    lines = ok(repo, "submit", "plan", ".planning", "--no-dispatch")
    assert lines[1] == "cw: changed 01-01: 2 tasks: 1 task edited (01-01-2)"
    shown = {k: json.loads(cw(repo, "task", "show", k, "--json").stdout) for k in ids}
    assert shown["01-01-1"]["prompt"] == "Make the core, carefully.", "the person's edit stands"
    assert shown["01-01-1"]["priority"] == 7
    assert shown["01-01-2"]["prompt"] == "Test it well.", "the files changed this task"


def test_a_changed_plan_whose_tasks_started_is_refused_in_one_line(
    repo: Path, redis_url: str
) -> None:
    write(repo, PHASE_1)
    assert cw(repo, "submit", "plan", ".planning", env={"CW_BROKER_URL": redis_url}).returncode == 0
    write(
        repo,
        {
            "01-core/01-01-PLAN.md": plan(
                "01", "01", "Make another core.", "Test the core.", "More."
            )
        },
    )
    assert refused(repo, "submit", "plan", ".planning") == (
        "cw: error: plan 01-01 (.planning/phases/01-core/01-01-PLAN.md): 1 task added (01-01-3), "
        "1 task edited (01-01-1): its tasks have started, so it cannot change; to add or change "
        "work once a plan has started, add a new plan (the GSD way, e.g. a gap-closure plan) "
        "instead of editing this one; nothing stored"
    )
    assert refused(repo, "plan", "cancel", "01-01") == (
        "cw: error: plan 01-01: task 01-01-1 is queued: only a plan none of whose tasks has "
        "started can be cancelled (cw task cancel cancels one task, or gives it up)"
    )


def test_a_plan_gone_from_disk_is_kept_and_new_plans_may_wait_for_it(repo: Path) -> None:
    write(repo, PHASE_1)
    ok(repo, "submit", "plan", ".planning", "--no-dispatch")
    (repo / ".planning" / "phases" / "01-core" / "01-01-PLAN.md").unlink()
    write(repo, PHASE_2)
    lines = ok(repo, "submit", "plan", ".planning", "--no-dispatch")
    assert (
        "cw: missing 01-01: 2 tasks: missing on disk (kept as stored; it still runs: "
        "`cw plan cancel 01-01` stops it)"
    ) in lines
    assert depends_on(repo, "02-01-1") == ["01-01-2", "01-02-1"]
    assert depends_on(repo, "02-02-1") == ["01-01-2", "01-02-1"]
    assert "01-01-1" in task_keys(repo)


def test_one_new_plan_md_may_depend_on_plans_submitted_before(repo: Path) -> None:
    write(repo, PHASE_1)
    ok(repo, "submit", "plan", ".planning", "--no-dispatch")
    write(repo, PHASE_2)
    lines = ok(repo, "submit", "plan", ".planning/phases/02-api/02-02-PLAN.md", "--no-dispatch")
    assert lines == [
        "cw: initiative 'repo' (id 1): 1 task added, 1 plan new, 0 plans unchanged",
        "cw: added 02-02: 1 task; waits for 01-01, 01-02",
    ]
    folder = repo / ".planning/phases/02-api"  # run from inside it: the same plan, the same name
    lines = ok(folder, "submit", "plan", "02-01-PLAN.md", "--no-dispatch")
    assert lines[0] == "cw: initiative 'repo' (id 1): 2 tasks added, 1 plan new, 0 plans unchanged"
    assert depends_on(repo, "02-01-1") == ["01-01-2", "01-02-1"]  # phase order reaches them


def test_cancelling_a_plan_blocks_what_waits_for_it(repo: Path) -> None:
    write(repo, {**PHASE_1, **PHASE_2})
    ok(repo, "submit", "plan", ".planning", "--no-dispatch")
    assert ok(repo, "plan", "cancel", "01-02") == ["cw: plan 01-02 cancelled (1 task)"]
    assert state_of(repo, "01-02-1") == "cancelled" and state_of(repo, "02-01-1") == "blocked"
    listed = {p["plan"]: p["state"] for p in json.loads(cw(repo, "plan", "list", "--json").stdout)}
    assert listed == {
        "01-01": "not started",
        "01-02": "cancelled",
        "02-01": "blocked",
        "02-02": "blocked",
    }
    assert (
        refused(repo, "plan", "cancel", "09-09") == "cw: error: no plan '09-09': see `cw plan list`"
    )


def test_a_cancelled_task_that_never_ran_leaves_its_plan_unstarted(repo: Path) -> None:
    """A task cancelled before anybody claimed it never ran: its plan has not started, so it
    may still be changed in place or cancelled whole."""
    write(repo, PHASE_1)
    ok(repo, "submit", "plan", ".planning", "--no-dispatch")
    ok(repo, "task", "cancel", "01-01-2")
    listed = {p["plan"]: p["state"] for p in json.loads(cw(repo, "plan", "list", "--json").stdout)}
    assert listed["01-01"] == "not started"
    write(repo, {"01-core/01-01-PLAN.md": plan("01", "01", "Make the core.", "Test it well.")})
    lines = ok(repo, "submit", "plan", ".planning", "--no-dispatch")
    said = "cw: changed 01-01: 2 tasks: 1 task edited (01-01-2) (1 cancelled task stays cancelled)"
    assert lines[1] == said
    assert state_of(repo, "01-01-2") == "cancelled", "the person's cancel stands"
    assert ok(repo, "plan", "cancel", "01-01") == ["cw: plan 01-01 cancelled (1 task)"]


def test_dropping_a_cancelled_task_frees_what_it_blocked(repo: Path) -> None:
    write(repo, {**PHASE_1, **PHASE_2})
    ok(repo, "submit", "plan", ".planning", "--no-dispatch")
    ok(repo, "task", "cancel", "01-01-2")
    assert state_of(repo, "02-01-1") == "blocked" and state_of(repo, "02-02-1") == "blocked"
    write(repo, {"01-core/01-01-PLAN.md": plan("01", "01", "Make the core.")})
    ok(repo, "submit", "plan", ".planning", "--no-dispatch")
    assert "01-01-2" not in task_keys(repo)
    assert depends_on(repo, "02-02-1") == ["01-01-1", "01-02-1"]
    assert state_of(repo, "02-01-1") == "pending" and state_of(repo, "02-02-1") == "pending"
    assert state_of(repo, "02-01-2") == "pending", "downstream of a freed task too"


def test_dropping_the_edge_to_a_cancelled_task_frees_what_waited_on_it(repo: Path) -> None:
    steps = "initiative: y\ntasks:\n  - {id: a, prompt: p}\n  - {id: b, prompt: q%s}\n"
    later = "  - {id: c, prompt: r, depends_on: [b]}\n"
    (repo / "y.yaml").write_text(steps % ", depends_on: [a]" + later)
    ok(repo, "submit", "plan", "y.yaml", "--no-dispatch")
    ok(repo, "task", "cancel", "a")
    assert (state_of(repo, "b"), state_of(repo, "c")) == ("blocked", "blocked")
    (repo / "y.yaml").write_text(steps % "" + later)
    ok(repo, "submit", "plan", "y.yaml", "--no-dispatch")
    assert depends_on(repo, "b") == []
    assert (state_of(repo, "b"), state_of(repo, "c")) == ("ready", "pending")


def test_a_depends_on_taken_out_frees_the_plan_that_still_waits(repo: Path) -> None:
    after = 'depends_on: ["01-01"]\n'
    first, second = plan("01", "01", "one"), plan("01", "02", "two", front=after)
    write(repo, {"01-a/01-01-PLAN.md": first, "01-a/01-02-PLAN.md": second})
    ok(repo, "submit", "plan", ".planning", "--no-dispatch")
    assert (state_of(repo, "01-02-1"), depends_on(repo, "01-02-1")) == ("pending", ["01-01-1"])
    write(repo, {"01-a/01-02-PLAN.md": plan("01", "02", "two", front="depends_on: []\n")})
    said = "unchanged 01-02: 1 task; no longer waits for 01-01"
    assert ok(repo, "submit", "plan", ".planning", "--dry-run")[2] == f"  {said}"
    assert ok(repo, "submit", "plan", ".planning", "--no-dispatch")[1:] == [f"cw: {said}"]
    assert (state_of(repo, "01-02-1"), depends_on(repo, "01-02-1")) == ("ready", [])
    assert ok(repo, "submit", "plan", ".planning", "--no-dispatch")[0].endswith(
        "nothing new; 2 plans unchanged"
    )


def test_a_renamed_project_is_refused_rather_than_run_again_as_a_new_initiative(
    repo: Path,
) -> None:
    write(repo, PHASE_1)
    (repo / ".planning" / "PROJECT.md").write_text("# Tally\n", encoding="utf-8")
    ok(repo, "submit", "plan", ".planning", "--no-dispatch")
    (repo / ".planning" / "PROJECT.md").write_text("# Tally App\n", encoding="utf-8")
    said = refused(repo, "submit", "plan", ".")  # the repository: the same .planning/
    assert said.startswith(
        "cw: error: initiative 'Tally App' would be new, but 'Tally' (id 1) holds 2 of its 2 "
        "plans as they are: every task would run again."
    )
    assert said.endswith("add --new-initiative")
    assert refused(repo, "submit", "plan", ".planning", "--dry-run") == said
    head = cw(repo, "submit", "plan", ".planning", "--dry-run").stdout.splitlines()[0]
    assert (
        head == "cw: dry run, nothing stored: new initiative 'Tally App': refused; 0 tasks to add"
    )
    assert ok(repo, "submit", "plan", ".planning", "--new-initiative", "--no-dispatch")[0] == (
        "cw: submitted initiative 'Tally App' (id 2): 3 tasks in 2 plans"
    )


def test_where_a_plan_came_from_is_kept_relative_to_the_repository(repo: Path) -> None:
    """Submitted from a subdirectory, a plan is known by its place in the repository: a
    renamed project submitted from the top is still refused, and `cw plan list` from anywhere
    names each file and says which is gone."""
    write(repo, PHASE_1)
    (repo / ".planning" / "PROJECT.md").write_text("# Tally\n", encoding="utf-8")
    (repo / "sub").mkdir()
    ok(repo / "sub", "submit", "plan", "../.planning", "--no-dispatch")
    assert ok(repo, "plan", "list")[1].endswith("v1  .planning/phases/01-core/01-01-PLAN.md")
    (repo / ".planning" / "PROJECT.md").write_text("# Tally App\n", encoding="utf-8")
    said = refused(repo, "submit", "plan", ".planning")
    assert said.startswith("cw: error: initiative 'Tally App' would be new, but 'Tally' (id 1)")
    (repo / ".planning" / "phases" / "01-core" / "01-02-PLAN.md").unlink()
    listed = ok(repo / "sub", "plan", "list")
    assert listed[1].endswith("01-01-PLAN.md"), listed
    assert listed[2].endswith("v1  .planning/phases/01-core/01-02-PLAN.md  (missing on disk)")


def test_two_projects_submitted_from_same_named_paths_are_two_initiatives(repo: Path) -> None:
    for name, step in (("front", "Draw it."), ("back", "Serve it.")):
        (repo / name).mkdir()
        (repo / name / "plan.yaml").write_text(
            f"initiative: {name}\ntasks:\n  - {{id: a, prompt: {step}}}\n", encoding="utf-8"
        )
        assert ok(repo / name, "submit", "plan", "plan.yaml", "--no-dispatch")[0].startswith(
            f"cw: submitted initiative '{name}'"
        )


def test_a_wait_kept_only_through_a_task_that_started_is_not_dropped(repo: Path) -> None:
    """02-01 waits for phase 01 (01-01 and 01-02). 01-02 now depends on 01-01, so the plans
    would keep 02-01 after 01-01 through 01-02, but 01-02's task has started and cannot be made
    to wait: 02-01 keeps its own wait for 01-01."""
    write(repo, PHASE_1 | {"02-api/02-01-PLAN.md": plan("02", "01", "Serve it.")})
    ok(repo, "submit", "plan", ".planning", "--no-dispatch")
    assert depends_on(repo, "02-01-1") == ["01-01-2", "01-02-1"]
    store = Store.open(store_url(repo))
    for claim in store.claim_ready_tasks():  # 01-01-1 and 01-02-1 start
        assert store.start_attempt(claim, worker="w", host="h", lease_seconds=600)
    store.close()
    after = 'depends_on: ["01-01"]\n'
    write(repo, {"01-core/01-02-PLAN.md": plan("01", "02", "Write the docs.", front=after)})
    lines = ok(repo, "submit", "plan", ".planning", "--no-dispatch")
    assert "cw: note: task 01-02-1 is running already, so it does not wait for 01-01-2" in lines
    assert depends_on(repo, "02-01-1") == ["01-01-2", "01-02-1"]
    assert not any("no longer waits" in line for line in lines)


def test_a_ready_task_that_never_started_waits_for_a_dependency_its_plan_now_names(
    repo: Path,
) -> None:
    """Its plan changed before it started, so it is updated in place, depends_on included: the
    new dependency was noted as too late and both ran side by side."""
    write(repo, PHASE_1)
    ok(repo, "submit", "plan", ".planning", "--no-dispatch")
    assert state_of(repo, "01-02-1") == "ready"
    after = 'depends_on: ["01-01"]\n'
    write(repo, {"01-core/01-02-PLAN.md": plan("01", "02", "Write the docs.", front=after)})
    lines = ok(repo, "submit", "plan", ".planning", "--no-dispatch")
    assert not any("does not wait" in line for line in lines), lines
    assert depends_on(repo, "01-02-1") == ["01-01-2"] and state_of(repo, "01-02-1") == "pending"


def test_lenient_keeps_the_stored_version_of_a_plan_it_cannot_read_now(repo: Path) -> None:
    """01-02 was stored; its file is broken now: its stored version still runs, so phase 02's
    plans still wait for it and are not skipped (a new one included)."""
    write(repo, PHASE_1 | {"02-api/02-01-PLAN.md": plan("02", "01", "Serve it.")})
    ok(repo, "submit", "plan", ".planning", "--no-dispatch")
    write(repo, {"01-core/01-02-PLAN.md": "---\nphase: 01\nplan: 02\n---\n<tasks></tasks>\n"})
    write(repo, {"02-api/02-02-PLAN.md": plan("02", "02", "Add a client.")})
    lines = ok(repo, "submit", "plan", ".planning", "--lenient", "--no-dispatch")
    assert "cw: added 02-02: 1 task; waits for 01-01, 01-02" in lines
    assert not any("phase order" in line for line in lines)
    # On disk, unreadable: not "missing on disk".
    skipped = "cw: skipped 01-02: 1 task: not read this time, --lenient skipped it (kept as stored"
    assert any(line.startswith(skipped) for line in lines), lines
    assert depends_on(repo, "02-01-1") == ["01-01-2", "01-02-1"]


def test_lenient_reads_a_stored_plan_waiting_for_one_it_skips(repo: Path) -> None:
    """01-02 (stored, after 01-01) is gone from disk; 01-01 now names a plan that does not
    exist, so a lenient reading skips it: the stored 01-02 still waits for it."""
    after = 'depends_on: ["01-01"]\n'
    first, second = plan("01", "01", "one"), plan("01", "02", "two", front=after)
    third = plan("01", "03", "three")
    write(repo, {"01-a/01-01-PLAN.md": first, "01-a/01-02-PLAN.md": second})
    write(repo, {"01-a/01-03-PLAN.md": third})
    ok(repo, "submit", "plan", ".planning", "--no-dispatch")
    (repo / ".planning/phases/01-a/01-02-PLAN.md").unlink()
    write(repo, {"01-a/01-01-PLAN.md": plan("01", "01", "one", front='depends_on: ["09-09"]\n')})
    out = cw(repo, "submit", "plan", ".planning", "--lenient", "--dry-run")
    assert out.returncode == 0, out.stderr
    assert "depends on unknown plan '09-09'" in out.stdout
    assert "  skipped   01-01: 1 task: not read this time" in out.stdout, "read, yet skipped"


YAML_V1 = """\
initiative: payments
phases:
  - id: "01"
    plans:
      - id: ledger
        tasks:
          - {id: schema, prompt: Create the schema.}
          - {id: repo, prompt: Write the repository., depends_on: [schema]}
"""
YAML_V2 = (
    YAML_V1
    + """\
      - id: api
        depends_on: [ledger]
        tasks:
          - {id: routes, prompt: Serve the ledger.}
"""
)


def test_a_yaml_plan_grows_the_same_way(repo: Path) -> None:
    (repo / "plan.yaml").write_text(YAML_V1)
    ok(repo, "submit", "plan", "plan.yaml", "--no-dispatch")
    assert ok(repo, "submit", "plan", "plan.yaml", "--no-dispatch") == [
        "cw: initiative 'payments' (id 1): nothing new; 1 plan unchanged"
    ]
    (repo / "plan.yaml").write_text(YAML_V2)
    assert ok(repo, "submit", "plan", "plan.yaml", "--no-dispatch") == [
        "cw: initiative 'payments' (id 1): 1 task added, 1 plan new, 1 plan unchanged",
        "cw: added api: 1 task; waits for ledger",
    ]
    assert depends_on(repo, "routes") == ["repo"]
    moved = YAML_V2.replace("{id: routes, prompt: Serve the ledger.}", "{id: repo, prompt: X.}")
    (repo / "plan.yaml").write_text(
        moved.replace(
            "          - {id: repo, prompt: Write the repository., depends_on: [schema]}\n", ""
        )
    )
    line = refused(repo, "submit", "plan", "plan.yaml", "--no-dispatch")
    assert line == (
        "cw: error: plan api (plan.yaml): 1 task added (repo), 1 task removed (routes): task repo "
        "already belongs to plan ledger: give the task a new id, a task cannot move between "
        "plans; nothing stored"
    )


def test_two_submits_at_once_store_each_task_once(repo: Path) -> None:
    write(repo, PHASE_1)
    ok(repo, "submit", "plan", ".planning", "--no-dispatch")
    write(repo, {**PHASE_2, **HOTFIX, **GAPS})
    argv = [*CW, "submit", "plan", ".planning", "--no-dispatch"]
    running = [
        subprocess.Popen(argv, cwd=repo, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    try:
        said = [proc.communicate(timeout=120) for proc in running]
    finally:
        for proc in running:  # none left running, no pipe left for the next test's collector
            proc.kill()
            proc.communicate()
    assert [proc.returncode for proc in running] == [0, 0], said
    heads = sorted(out.splitlines()[0] for out, _err in said)
    assert heads == [
        "cw: initiative 'repo' (id 1): 5 tasks added, 4 plans new, 2 plans unchanged",
        "cw: initiative 'repo' (id 1): nothing new; 6 plans unchanged",
    ]
    keys = task_keys(repo)
    assert len(keys) == len(set(keys)) == 8


def test_a_resubmit_of_unchanged_files_answers_without_loading_the_store(repo: Path) -> None:
    write(repo, PHASE_1)
    ok(repo, "submit", "plan", ".planning", "--no-dispatch")
    before = dump_store(store_url(repo))
    argv = [sys.executable, "-X", "importtime", "-m", "cw", "submit", "plan", ".planning"]
    out = subprocess.run(argv, cwd=repo, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout == "cw: initiative 'repo' (id 1): nothing new; 2 plans unchanged\n"
    if not POSTGRES_URL:  # a receipt's revision is read with sqlite3 alone
        assert "sqlalchemy" not in out.stderr, "answered from the receipt of the submit before"
    assert dump_store(store_url(repo)) == before

    # The same size and the same modification time, in the same second: still a change.
    path = repo / ".planning" / "phases" / "01-core" / "01-02-PLAN.md"
    times = path.stat()
    path.write_text(path.read_text().replace("Write the docs.", "Write the code."))
    os.utime(path, ns=(times.st_atime_ns, times.st_mtime_ns))
    assert path.stat().st_size == times.st_size
    lines = ok(repo, "submit", "plan", ".planning", "--no-dispatch")
    assert lines[1] == "cw: changed 01-02: 1 task: 1 task edited (01-02-1)"
    assert ok(repo, "submit", "plan", ".planning", "--no-dispatch") == [
        "cw: initiative 'repo' (id 1): nothing new; 2 plans unchanged"
    ]


def test_a_receipt_is_not_used_once_another_submit_changed_the_initiative(repo: Path) -> None:
    write(repo, PHASE_1)
    ok(repo, "submit", "plan", ".planning", "--no-dispatch")
    ok(repo, "submit", "plan", ".planning", "--no-dispatch")  # the receipt, surely
    other = repo / "elsewhere" / ".planning"
    (other / "phases" / "02-api").mkdir(parents=True)
    (other / "ROADMAP.md").write_text("# Roadmap: repo\n")
    (other / "phases" / "02-api" / "02-01-PLAN.md").write_text(plan("02", "01", "Serve it."))
    ok(repo, "submit", "plan", "elsewhere/.planning", "--no-dispatch")  # the same initiative
    lines = ok(repo, "submit", "plan", ".planning", "--no-dispatch")
    assert lines[0] == "cw: initiative 'repo' (id 1): nothing new; 2 plans unchanged"
    assert lines[1].startswith("cw: missing 02-01: 1 task: missing on disk")


def test_a_receipt_answers_only_for_the_database_it_was_kept_for(
    repo: Path, tmp_path: Path
) -> None:
    """A receipt kept for the district's database answered "nothing new" for another one
    (CW_DATABASE_URL) that held only the first plan: the second was never added there."""
    if POSTGRES_URL:
        pytest.skip("receipts answer for SQLite districts only")
    other = {"CW_DATABASE_URL": f"sqlite:///{tmp_path / 'other.db'}"}
    write(repo, {"01-core/01-01-PLAN.md": PHASE_1["01-core/01-01-PLAN.md"]})
    assert cw(repo, "submit", "plan", ".planning", "--no-dispatch", env=other).returncode == 0
    write(repo, PHASE_1)
    time.sleep(1.1)  # past the second in which a file changed: the receipt trusts its stamp
    ok(repo, "submit", "plan", ".planning", "--no-dispatch")
    ok(repo, "submit", "plan", ".planning", "--no-dispatch")  # kept a receipt
    there = cw(repo, "submit", "plan", ".planning", "--no-dispatch", env=other)
    assert there.stdout.startswith("cw: initiative 'repo' (id 1): 1 task added, 1 plan new")


def test_a_flat_yaml_list_grows_as_the_docs_say_once_its_tasks_started(
    repo: Path, redis_url: str
) -> None:
    """docs/plan-format.md: the list becomes plan 01-01 of phase 01 (unchanged), the new
    tasks a new plan."""
    flat = "initiative: f\ndescription: Two steps.\ntasks:\n  - {id: a, prompt: Do a.}\n"
    (repo / "f.yaml").write_text(flat, encoding="utf-8")
    assert cw(repo, "submit", "plan", "f.yaml", env={"CW_BROKER_URL": redis_url}).returncode == 0
    (repo / "f.yaml").write_text(flat + "  - {id: b, prompt: Do b.}\n", encoding="utf-8")
    assert "(a YAML file's flat tasks: list is plan 01-01" in refused(
        repo, "submit", "plan", "f.yaml"
    )
    grown = (
        "initiative: f\ndescription: Two steps.\nphases:\n"
        '  - id: "01"\n    plans:\n'
        '      - id: "01-01"\n        objective: Two steps.\n'
        "        tasks:\n          - {id: a, prompt: Do a.}\n"
        '      - id: "01-02"\n        tasks:\n          - {id: b, prompt: Do b.}\n'
    )
    (repo / "f.yaml").write_text(grown, encoding="utf-8")
    assert ok(repo, "submit", "plan", "f.yaml", "--no-dispatch") == [
        "cw: initiative 'f' (id 1): 1 task added, 1 plan new, 1 plan unchanged",
        "cw: added 01-02: 1 task",
    ]
    assert sorted(task_keys(repo)) == ["a", "b"]


def test_a_plan_moved_to_another_phase_is_refused_not_ignored(repo: Path) -> None:
    """The move was answered "nothing new", and the plan stayed in its old phase."""

    def phases(*layout: tuple[str, list[str]]) -> str:
        text = "initiative: moves\nphases:\n"
        for phase, plans in layout:
            text += f'  - id: "{phase}"\n    plans:\n'
            for plan in plans:
                text += f"      - id: {plan}\n        tasks:\n"
                text += f"          - {{id: {plan}-task, prompt: Do {plan}.}}\n"
        return text

    (repo / "moves.yaml").write_text(phases(("1", ["p", "q"])), encoding="utf-8")
    ok(repo, "submit", "plan", "moves.yaml", "--no-dispatch")
    (repo / "moves.yaml").write_text(phases(("1", ["p"]), ("2", ["q"])), encoding="utf-8")
    line = refused(repo, "submit", "plan", "moves.yaml", "--no-dispatch")
    assert "plan q (" in line and "stored in phase 1, not 2: a plan cannot move" in line, line


def test_tasks_reordered_in_a_yaml_plan_are_said_to_be(repo: Path) -> None:
    """The change was described as nothing: "changed 01-01: 2 tasks: " (refused: ": : its
    tasks have started")."""
    first = "initiative: order\ntasks:\n  - {id: a, prompt: Do a.}\n  - {id: b, prompt: Do b.}\n"
    (repo / "order.yaml").write_text(first, encoding="utf-8")
    ok(repo, "submit", "plan", "order.yaml", "--no-dispatch")
    swapped = "initiative: order\ntasks:\n  - {id: b, prompt: Do b.}\n  - {id: a, prompt: Do a.}\n"
    (repo / "order.yaml").write_text(swapped, encoding="utf-8")
    lines = ok(repo, "submit", "plan", "order.yaml", "--dry-run")
    assert "  changed   01-01: 2 tasks: its tasks reordered" in lines, lines
