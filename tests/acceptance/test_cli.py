"""The real `cw` command in subprocesses against temporary repositories, on the embedded broker."""

from __future__ import annotations

import contextlib
import json
import os
import pty
import select
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

import cw
from cw.store import AttemptResult, Store
from tests.conftest import CW, Processes, dump_store, git, store_url

# a -> c, b -> c, b -> d, d -> e: not series-parallel. `a` runs until the test releases it,
# so d and e must get merged while a still runs: nothing waits for a "wave" to finish.
NSP_PLAN = """\
initiative: nsp
tasks:
  - {id: a, prompt: slow root}
  - {id: b, prompt: quick root}
  - {id: c, prompt: needs a and b, depends_on: [a, b]}
  - {id: d, prompt: needs b, depends_on: [b]}
  - {id: e, prompt: needs d, depends_on: [d]}
"""
AGENT = """\
mkdir -p out
echo "$CW_TASK_KEY saw: $(ls out | tr '\\n' ' ')" > "out/$CW_TASK_KEY.txt"
if [ "$CW_TASK_KEY" = a ]; then
  while [ ! -e "$(dirname "$0")/.cw/release-a" ]; do sleep 0.1; done
elif [ "$CW_TASK_KEY" = held ]; then echo "held starts";
  while [ ! -e "$(dirname "$0")/release" ]; do sleep 0.1; done; echo "held released";
else sleep 0.2; fi
echo "$CW_TASK_KEY ends"
"""


def run_cw(repo: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [*CW, *args], cwd=repo, capture_output=True, text=True, timeout=120, env=dict(os.environ)
    )
    if check and result.returncode != 0:
        raise AssertionError(f"cw {' '.join(args)} -> {result.returncode}\n{result.stderr}")
    return result


@pytest.fixture
def district(make_repo: Callable[[str], Path], cw_database: str) -> Iterator[Path]:
    """An initialised repository whose agents run AGENT, on the test database; its embedded
    broker stops after."""
    repo = make_repo("repo")
    run_cw(repo, "init")
    (repo / "agent.sh").write_text(AGENT)
    git(repo, "add", "agent.sh")
    git(repo, "commit", "-q", "-m", "agent script")
    with open(repo / ".cw" / "config.toml", "a") as config:
        config.write(f'agent_command = "sh {repo / "agent.sh"}"\nheartbeat = 1.0\n')
    yield repo
    run_cw(repo, "broker", "stop", check=False)


def start_workers(processes: Processes, repo: Path) -> None:
    env = dict(os.environ)
    processes.start([*CW, "worker", "-c", "1"], repo, env, "worker-1")
    processes.start([*CW, "worker", "-c", "1"], repo, env, "worker-2")
    processes.start([*CW, "worker", "--merge"], repo, env, "merge-worker")


def task_states(repo: Path) -> dict[str, str]:
    return {t["key"]: t["state"] for t in json.loads(run_cw(repo, "task", "list", "--json").stdout)}


def merge_order(repo: Path) -> list[str]:
    subjects = git(repo, "log", "--first-parent", "--reverse", "--format=%s", "cw/integration")
    return [s.split()[2].rstrip(":") for s in subjects.splitlines() if s.startswith("cw: merge")]


def test_plan_with_a_non_series_parallel_dag_merges_in_dependency_order(
    district: Path, processes: Processes
) -> None:
    repo = district
    (repo / "plan.yaml").write_text(NSP_PLAN)
    start_workers(processes, repo)
    out = run_cw(repo, "submit", "plan", "plan.yaml").stdout
    assert "5 tasks" in out and "dispatched 2" in out
    deadline = time.monotonic() + 90
    while (states := task_states(repo))["e"] != "done":
        assert time.monotonic() < deadline, f"e was not merged while a ran: {states}"
        time.sleep(0.3)
    assert states["a"] == "running" and states["c"] == "pending", states
    (repo / ".cw" / "release-a").touch()
    assert "5/5 tasks done" in run_cw(repo, "wait", "--timeout", "90").stdout

    order = merge_order(repo)
    assert sorted(order) == ["a", "b", "c", "d", "e"]
    for task, deps in {"c": "ab", "d": "b", "e": "d"}.items():
        assert all(order.index(dep) < order.index(task) for dep in deps), order
    assert order.index("e") < order.index("a"), f"e waited for the slow a: {order}"
    for key in "abcde":
        git(repo, "cat-file", "-e", f"cw/integration:out/{key}.txt")
    assert "a.txt" in git(repo, "show", "cw/integration:out/c.txt")

    status = json.loads(run_cw(repo, "status", "--json").stdout)
    assert status["counts"] == {"done": 5} and status["blocked"] == []
    agents = json.loads(run_cw(repo, "agent", "list", "--json").stdout)
    assert len({a["name"] for a in agents}) == 5
    assert {a["state"] for a in agents} == {"done"}
    workers = {a["worker"] for a in agents}
    assert len(workers) == 2, f"both agent workers took tasks: {workers}"
    assert git(repo, "rev-parse", "--abbrev-ref", "HEAD") == "main"
    assert git(repo, "status", "--porcelain") == "?? plan.yaml"  # the checkout is untouched


def test_agent_logs_are_kept_per_agent(district: Path, processes: Processes) -> None:
    repo = district
    (repo / "plan.yaml").write_text("initiative: one\ntasks:\n  - {id: solo, prompt: hi}\n")
    start_workers(processes, repo)
    run_cw(repo, "submit", "plan", "plan.yaml")
    run_cw(repo, "wait", "--timeout", "60")
    (agent,) = json.loads(run_cw(repo, "agent", "list", "--json").stdout)
    logs = repo / ".cw" / "logs" / "agents" / agent["name"]
    assert sorted(p.name for p in logs.iterdir()) == ["attempt-1.stderr", "attempt-1.stdout"]
    shown = run_cw(repo, "task", "show", "solo").stdout
    assert "state     done" in shown and agent["name"] in shown


def test_version_is_answered_before_the_cli_loads_and_reads_as_clicks(tmp_path: Path) -> None:
    quick = run_cw(tmp_path, "--version")
    through_click = run_cw(tmp_path, "--verbose", "--version")  # not the fast path
    assert quick.stdout == through_click.stdout == f"cw, version {cw.__version__}\n"
    loaded = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "cw", "--version"],
        capture_output=True,
        text=True,
    )
    assert " click" not in loaded.stderr and " cw.cli" not in loaded.stderr


@pytest.mark.parametrize("args", [[], ["task"], ["submit"]], ids=" ".join)
def test_a_group_without_its_command_shows_its_help(tmp_path: Path, args: list[str]) -> None:
    result = run_cw(tmp_path, *args)
    assert result.stdout.startswith(f"Usage: {' '.join(['cw', *args])} ") and not result.stderr


def test_init_outside_a_git_repository_fails_with_one_line(tmp_path: Path) -> None:
    result = run_cw(tmp_path, "init", check=False)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "not inside a git repository" in result.stderr


def test_commands_before_init_say_to_run_init(make_repo: Callable[[str], Path]) -> None:
    result = run_cw(make_repo("repo"), "status", check=False)
    assert result.returncode == 2 and "run `cw init` first" in result.stderr


@pytest.mark.parametrize(
    ("plan", "message"),
    [
        (
            "initiative: x\ntasks:\n  - {id: a, prompt: p, depends_on: [b]}\n"
            "  - {id: b, prompt: p, depends_on: [a]}\n",
            "a -> b -> a",
        ),
        ("initiative: x\ntasks:\n  - {id: a, prompt: p, depends_on: [zz]}\n", "zz"),
        ("initiative: x\ntasks:\n  - {id: a, prompt: p}\n  - {id: a, prompt: q}\n", "a"),
        ("initiative: x\ntasks:\n  - {id: ../evil, prompt: p}\n", "../evil"),
        ("initiative: x\ntasks: [\n", "plan.yaml:"),
    ],
    ids=["cycle", "unknown-dependency", "duplicate-id", "path-in-id", "broken-yaml"],
)
def test_a_bad_plan_is_one_line_exit_2_and_writes_nothing(
    district: Path, plan: str, message: str
) -> None:
    repo = district
    (repo / "plan.yaml").write_text(plan)
    before = dump_store(store_url(repo))
    result = run_cw(repo, "submit", "plan", "plan.yaml", check=False)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("cw: error: plan.yaml:") and result.stderr.count("\n") == 1
    assert message in result.stderr
    assert dump_store(store_url(repo)) == before


def test_unknown_task_is_a_clear_error(district: Path) -> None:
    result = run_cw(district, "task", "show", "nope", check=False)
    assert result.returncode == 2 and "no task 'nope'" in result.stderr


FIXTURES = Path(__file__).parent / "fixtures"


def test_a_gsd_planning_directory_runs_phase_by_phase(district: Path, processes: Processes) -> None:
    repo = district
    shutil.copytree(FIXTURES / ".planning", repo / ".planning")
    start_workers(processes, repo)
    out = run_cw(repo, "submit", "plan", ".planning").stdout
    assert "'Ledger Service'" in out and "5 tasks in 4 plans" in out
    run_cw(repo, "wait", "--timeout", "90")
    assert merge_order(repo) == ["01-01-1", "01-01-2", "01-02-1", "01.1-01-1", "02-01-1"]
    status = json.loads(run_cw(repo, "status", "--json").stdout)
    assert [(p["phase"], p["plan"], p["done"]) for p in status["plans"]] == [
        ("01", "01-01", 2),
        ("01", "01-02", 1),
        ("01.1", "01.1-01", 1),
        ("02", "02-01", 1),
    ]
    shown = json.loads(run_cw(repo, "task", "show", "01-01-1", "--json").stdout)
    assert shown["verify"] == "test -s out/01-01-1.txt"
    assert (
        shown["extra"]["verify_text"]
        == "The file exists: <automated>test -s out/01-01-1.txt</automated>"
    )
    assert shown["verify_treatment"].startswith("the merge runs `test -s out/01-01-1.txt` (the <")
    (merge,) = shown["merges"]
    assert merge["verify_command"] == "test -s out/01-01-1.txt" and merge["verify_exit_code"] == 0
    assert shown["dependents"] == ["01-01-2"]


def test_init_is_idempotent_and_refuses_a_different_or_invalid_branch(
    make_repo: Callable[[str], Path], cw_database: str
) -> None:
    repo = make_repo("repo")
    for name in ("no..dots", "é" * 200, ""):  # the second: git takes it, the file system not
        bad = run_cw(repo, "init", "--integration-branch", name, check=False)
        assert bad.returncode == 2 and "not a valid git branch name" in bad.stderr
    full = run_cw(repo, "init", "--integration-branch", "refs/heads/x", check=False)
    assert full.returncode == 2 and "give the branch's name (without refs/heads/)" in full.stderr
    mine = run_cw(repo, "init", "--integration-branch", "main", check=False)
    assert mine.returncode == 2 and "'main' is the branch checked out here" in mine.stderr
    git(repo, "branch", "team")  # in the way of team/integration, as `cw` is of cw/task/...
    in_the_way = run_cw(repo, "init", "--integration-branch", "team/integration", check=False)
    assert in_the_way.returncode == 2 and "a branch 'team' exists" in in_the_way.stderr
    git(repo, "branch", "-D", "team")
    assert not (repo / ".cw").exists()
    run_cw(repo, "init", "--integration-branch", "team/integration")
    assert "team/integration" in run_cw(repo, "init").stdout
    other = run_cw(repo, "init", "--integration-branch", "elsewhere", check=False)
    assert other.returncode == 2 and "already initialised" in other.stderr
    assert git(repo, "branch", "--list", "elsewhere") == ""
    assert git(repo, "status", "--porcelain") == ""


def test_logs_follow_a_command_agent_while_it_runs(district: Path, processes: Processes) -> None:
    repo = district
    (repo / "plan.yaml").write_text("initiative: f\ntasks:\n  - {id: held, prompt: wait}\n")
    run_cw(repo, "submit", "plan", "plan.yaml", "--no-dispatch")
    start_workers(processes, repo)
    run_cw(repo, "dispatch")
    deadline = time.monotonic() + 60
    while not (running := json.loads(run_cw(repo, "agent", "list", "--json").stdout)):
        assert time.monotonic() < deadline, "the agent never started"
        time.sleep(0.2)
    command = [*CW, "agent", "logs", running[0]["name"], "-f"]
    with subprocess.Popen(command, cwd=repo, stdout=subprocess.PIPE, text=True) as follow:
        try:
            assert follow.stdout is not None
            seen = [follow.stdout.readline().rstrip("\n")]
            while seen[-1] != "held starts":  # the agent waits for the release file meanwhile
                assert seen[-1] or follow.poll() is None, f"it returned before the end: {seen}"
                seen.append(follow.stdout.readline().rstrip("\n"))
            assert follow.poll() is None, "it returned while the agent still ran"
            (repo / "release").touch()
            rest, _ = follow.communicate(timeout=60)
        finally:
            follow.kill()
    assert follow.returncode == 0
    assert rest.splitlines()[-2:] == ["held released", "held ends"], rest


def test_logs_follow_waits_for_an_agent_whose_worker_is_still_starting_it(district: Path) -> None:
    """Running in the database, no log yet: `-f` printed "no output yet" and returned."""
    (district / "plan.yaml").write_text("initiative: w\ntasks:\n  - {id: a, prompt: p}\n")
    run_cw(district, "submit", "plan", "plan.yaml", "--no-dispatch")
    store = Store.open(store_url(district))
    (claim,) = store.claim_ready_tasks()
    assert store.start_attempt(claim, worker="w", host="h", lease_seconds=60)
    (agent,) = json.loads(run_cw(district, "agent", "list", "--json").stdout)
    command = [*CW, "agent", "logs", agent["name"], "-f"]
    with subprocess.Popen(command, cwd=district, stdout=subprocess.PIPE, text=True) as follow:
        try:
            time.sleep(3)  # cw starts in about a second
            assert follow.poll() is None, "it returned while the agent ran"
            log_dir = district / ".cw" / "logs" / "agents" / agent["name"]
            log_dir.mkdir(parents=True)
            (log_dir / "attempt-1.stdout").write_text("a starts\n")
            time.sleep(0.5)
            store.finish_attempt(claim, AttemptResult(outcome="failed", error="boom"), "command")
            out, _ = follow.communicate(timeout=30)
        finally:
            follow.kill()
            store.close()
    assert follow.returncode == 0
    assert out.splitlines() == ["=== attempt-1.stdout", "a starts"], out


def test_spawn_starts_a_ready_task_and_refuses_one_that_waits(
    district: Path, processes: Processes
) -> None:
    repo = district
    (repo / "plan.yaml").write_text(
        "initiative: s\ntasks:\n  - {id: first, prompt: a}\n"
        "  - {id: second, prompt: b, depends_on: [first]}\n"
    )
    run_cw(repo, "submit", "plan", "plan.yaml", "--no-dispatch")
    early = run_cw(repo, "agent", "spawn", "--task", "second", check=False)
    assert early.returncode == 2 and "it waits on first" in early.stderr
    start_workers(processes, repo)
    out = run_cw(repo, "agent", "spawn", "--task", "first").stdout
    assert out.startswith("cw: agent ") and "started on task first (attempt 1)" in out
    run_cw(repo, "wait", "--timeout", "60")
    states = {
        t["key"]: t["state"] for t in json.loads(run_cw(repo, "task", "list", "--json").stdout)
    }
    assert states == {"first": "done", "second": "done"}, "the merge dispatched the dependent"
    (first,) = [a for a in json.loads(run_cw(repo, "agent", "list", "--json").stdout)
                if a["task"] == "first"]  # fmt: skip
    logs = run_cw(repo, "agent", "logs", first["name"], "-f").stdout
    assert "=== attempt-1.stdout" in logs, "logs -f of a finished agent prints and returns"


def test_task_list_names_the_initiative_once_there_are_several(district: Path) -> None:
    repo = district
    (repo / "one.yaml").write_text("initiative: alpha\ntasks:\n  - {id: a, prompt: p}\n")
    (repo / "two.yaml").write_text("initiative: beta\ntasks:\n  - {id: a, prompt: p}\n")
    run_cw(repo, "submit", "plan", "one.yaml", "--no-dispatch")
    header = run_cw(repo, "task", "list").stdout.splitlines()[1]
    assert "initiative" not in header
    run_cw(repo, "submit", "plan", "two.yaml", "--no-dispatch")
    listing = run_cw(repo, "task", "list").stdout
    assert "initiative" in listing.splitlines()[1]
    assert "alpha" in listing and "beta" in listing


def test_a_budget_caps_dollars_tokens_or_both_and_lists_what_is_spent(district: Path) -> None:
    (district / "plan.yaml").write_text(NSP_PLAN)
    run_cw(district, "submit", "plan", "plan.yaml", "--no-dispatch")
    none = "no budgets: nothing caps what agents spend (cw budget set)\n"
    assert run_cw(district, "budget", "list").stdout == none
    said = run_cw(district, "budget", "set", "--tokens", "2M", "--initiative", "nsp").stdout
    assert said == "cw: budget of nsp set to 2M tokens\n"
    said = run_cw(district, "budget", "set", "5", "--initiative", "nsp").stdout
    assert said == "cw: budget of nsp set to $5.00\n"
    assert run_cw(district, "budget", "list").stdout == (
        "initiative nsp: $0.00 of $5.00, 0 of 2M tokens\n"
    )
    (row,) = json.loads(run_cw(district, "budget", "list", "--json").stdout)
    assert (row["budget_usd"], row["budget_tokens"], row["exhausted"]) == (5.0, 2_000_000, False)
    status = json.loads(run_cw(district, "status", "--json").stdout)
    assert (status["tokens"], status["token_counts"]["initiative"]) == (0, {"nsp": 0})
    said = run_cw(district, "budget", "remove", "--tokens", "--initiative", "nsp").stdout
    assert said == "cw: budget of nsp: cap in tokens removed\n"
    assert run_cw(district, "budget", "list").stdout == "initiative nsp: $0.00 of $5.00\n"
    said = run_cw(district, "budget", "remove", "--initiative", "nsp").stdout
    assert said == "cw: budget of nsp: caps removed\n"
    assert run_cw(district, "budget", "list").stdout == none


def test_status_watch_redraws_in_a_terminal_until_ctrl_c(district: Path) -> None:
    """In a terminal (a pseudo-terminal here) the status is drawn again as the district moves."""
    primary, secondary = pty.openpty()
    env = {**os.environ, "PYTHONFAULTHANDLER": "1"}  # SIGABRT prints every thread's stack
    proc = subprocess.Popen([*CW, "status", "--watch", "0.3"], cwd=district, stdin=secondary,
                            stdout=secondary, stderr=secondary, env=env)  # fmt: skip
    os.close(secondary)
    seen = b""

    def read_until(done: Callable[[], bool], seconds: float, what: str) -> None:
        """Read what is drawn, as a terminal does all along (a full one would block the
        redraw), until ``done``."""
        nonlocal seen
        deadline = time.monotonic() + seconds
        while not done():
            assert time.monotonic() < deadline, f"{what}: {seen[-500:]!r}"
            if select.select([primary], [], [], 0.1)[0]:
                with contextlib.suppress(OSError):  # EIO once the process has closed it
                    seen += os.read(primary, 65536)

    try:
        read_until(lambda: b"0 tasks" in seen, 30, "0 tasks never drawn")
        (district / "plan.yaml").write_text(NSP_PLAN)
        run_cw(district, "submit", "plan", "plan.yaml", "--no-dispatch")
        read_until(lambda: b"5 tasks" in seen, 30, "5 tasks never drawn")
        proc.send_signal(signal.SIGINT)
        try:
            read_until(lambda: proc.poll() is not None, 10, "still running 10 s after Ctrl-C")
        except AssertionError:
            proc.send_signal(signal.SIGABRT)  # where it is stuck, for the failure's message
            read_until(lambda: proc.poll() is not None, 5, "no stack")
            raise AssertionError(f"still running 10 s after Ctrl-C: {seen[-6000:]!r}") from None
        assert proc.returncode == 0
    finally:
        proc.kill()
        proc.wait()
        os.close(primary)


def test_status_watch_into_a_pipe_writes_each_board_as_it_is_drawn(district: Path) -> None:
    proc = subprocess.Popen([*CW, "status", "--watch", "0.2"], cwd=district,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()  # written before the next board, not at the end
        assert first.startswith(b"cw, ") and b"0 tasks" in first, first
        second = b""
        while b"0 tasks" not in second:
            second = proc.stdout.readline()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 0
    finally:
        proc.kill()
        proc.communicate()


def test_wait_ends_on_ctrl_c_with_130_while_tasks_are_still_active(district: Path) -> None:
    (district / "plan.yaml").write_text(NSP_PLAN)
    run_cw(district, "submit", "plan", "plan.yaml", "--no-dispatch")  # no worker: it waits
    proc = subprocess.Popen(
        [*CW, "wait", "--interval", "0.2"],
        cwd=district,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        time.sleep(3)
        assert proc.poll() is None, "still waiting"
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 130
    finally:
        proc.kill()
        proc.communicate()


def test_wait_ends_when_only_a_spent_budget_holds_work_and_says_so(district: Path) -> None:
    """A ready task whose budget is spent moves only when a person raises it: nothing to wait
    for (it waited until --timeout, or for ever)."""
    (district / "plan.yaml").write_text(NSP_PLAN)
    run_cw(district, "submit", "plan", "plan.yaml", "--no-dispatch")
    run_cw(district, "budget", "set", "0", "--initiative", "nsp")
    out = run_cw(district, "wait", "--timeout", "30", check=False)
    assert out.returncode == 1, out.stderr
    ready = len(json.loads(run_cw(district, "task", "list", "--state", "ready", "--json").stdout))
    assert out.stdout == (
        f"cw: 0/5 tasks done; for you: {ready} ready but over budget (cw budget set)\n"
    ), out.stdout
    run_cw(district, "budget", "set", "5", "--initiative", "nsp")  # raised: sent at once
    queued = json.loads(run_cw(district, "task", "list", "--state", "queued", "--json").stdout)
    assert len(queued) == ready


def test_what_cw_says_is_true_of_work_that_never_ran(district: Path) -> None:
    """A dry run of a new initiative stores it (it "would change"); an agent stopped while
    queued never ran (its "work on its branch"); a checkpoint has no diff (it "has not
    started"); a plan cancelled again changes nothing (it said "cancelled (0 tasks)")."""
    plan = NSP_PLAN + "  - {id: check, kind: 'checkpoint:human-verify', prompt: look}\n"
    (district / "plan.yaml").write_text(plan)
    said = run_cw(district, "submit", "plan", "plan.yaml", "--dry-run").stdout.splitlines()[0]
    assert (
        said == "cw: dry run, nothing stored: new initiative 'nsp': would be stored; 6 tasks to add"
    )
    run_cw(district, "submit", "plan", "plan.yaml")  # no worker: the roots stay queued
    agent = json.loads(run_cw(district, "task", "show", "a", "--json").stdout)["agent"]
    said = run_cw(district, "agent", "stop", agent).stdout
    assert (
        said
        == f"cw: agent {agent} stopped before it started. Send it with `cw agent resume {agent}`\n"
    )
    out = run_cw(district, "task", "diff", "check", check=False)
    assert out.returncode == 2 and "is a checkpoint" in out.stderr, out.stderr
    assert run_cw(district, "plan", "cancel", "01-01", check=False).returncode == 2  # a started one
    (district / "two.yaml").write_text("initiative: two\ntasks:\n  - {id: x, prompt: x}\n")
    run_cw(district, "submit", "plan", "two.yaml", "--no-dispatch")
    plan_id = json.loads(run_cw(district, "task", "show", "x", "--json").stdout)["plan_id"]
    assert "(1 task)" in run_cw(district, "plan", "cancel", str(plan_id)).stdout
    again = run_cw(district, "plan", "cancel", str(plan_id)).stdout
    assert again == f"cw: plan {plan_id} was cancelled already; nothing changed\n"


def test_status_watch_is_for_people_not_scripts(district: Path) -> None:
    refused = run_cw(district, "status", "--watch", "--json", check=False)
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1, refused.stderr


def test_wait_names_what_will_not_run_when_that_is_why_it_ends(district: Path) -> None:
    """A cancelled task and what it blocked: "0/2 tasks done" and exit 1 said no why."""
    (district / "plan.yaml").write_text(
        "initiative: gone\ntasks:\n  - {id: a, prompt: p}\n"
        "  - {id: b, prompt: p, depends_on: [a]}\n"
    )
    run_cw(district, "submit", "plan", "plan.yaml", "--no-dispatch")
    run_cw(district, "task", "cancel", "a")
    out = run_cw(district, "wait", "--timeout", "30", check=False)
    assert out.returncode == 1
    assert out.stdout == "cw: 0/2 tasks done; not to run: 1 cancelled, 1 blocked\n", out.stdout


def test_status_says_when_work_waits_for_workers_and_no_agent_runs(district: Path) -> None:
    """A user who submitted without starting a worker is told, not left watching a queue."""
    (district / "plan.yaml").write_text(NSP_PLAN)
    run_cw(district, "submit", "plan", "plan.yaml")  # sent to the workers; none is up
    assert "nothing runs" not in run_cw(district, "status").stdout, "sent moments ago"
    engine = sa.create_engine(store_url(district), poolclass=sa.NullPool)
    with engine.begin() as db:
        db.execute(sa.text("UPDATE tasks SET state_changed_at = state_changed_at - 90"))
    engine.dispose()
    shown = " ".join(run_cw(district, "status").stdout.split())
    assert "nothing runs: 2 task(s) sent to the workers, the first 9" in shown, shown
    assert "is an agent worker up? (`cw worker`, or `cw server`)" in shown


def test_an_action_done_while_the_broker_is_away_says_so_and_exits_0(
    district: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The retry is stored; only sending the task waits for `cw beat`: an error and a
    non-zero exit made scripts try again, and be told the task is no longer failed."""
    (district / "plan.yaml").write_text("initiative: away\ntasks:\n  - {id: a, prompt: p}\n")
    run_cw(district, "submit", "plan", "plan.yaml", "--no-dispatch")
    store = Store.open(store_url(district))
    (claim,) = store.claim_ready_tasks()
    assert store.start_attempt(claim, worker="w", host="h", lease_seconds=60)
    store.finish_attempt(claim, AttemptResult(outcome="failed", error="boom"), "command")
    monkeypatch.setenv("CW_BROKER_URL", "redis://127.0.0.1:1/0")
    retried = run_cw(district, "task", "retry", "a")
    assert retried.stderr.startswith("cw: done, but not sent yet: cannot reach the broker")
    assert retried.stderr.count("\n") == 1 and store.task_state(claim.task_id).value == "ready"
    store.close()


def test_retrying_a_task_whose_budget_is_spent_says_it_waits_for_a_raised_cap(
    district: Path,
) -> None:
    (district / "plan.yaml").write_text("initiative: paid\ntasks:\n  - {id: a, prompt: p}\n")
    run_cw(district, "submit", "plan", "plan.yaml", "--no-dispatch", "--budget", "1")
    store = Store.open(store_url(district))
    (claim,) = store.claim_ready_tasks()
    assert store.start_attempt(claim, worker="w", host="h", lease_seconds=60)
    failed = AttemptResult(outcome="failed", error="boom", cost_usd=2.0)
    store.finish_attempt(claim, failed, "claude")
    store.close()
    said = run_cw(district, "task", "retry", "a").stdout
    assert said == (
        "cw: task a retried; it is ready now; its budget is spent: it starts once the cap is "
        "raised (cw budget list)\n"
    )
    spawned = run_cw(district, "agent", "spawn", "--task", "a", check=False)
    assert spawned.returncode == 2 and "the budget of its plan or initiative is spent" in (
        spawned.stderr
    )
