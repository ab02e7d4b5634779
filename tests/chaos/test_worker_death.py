"""Fault 1: kill -9 of an agent worker's pool process mid-run, and of the whole worker.

The task finishes on another worker process, is merged exactly once, and its Claude session
is resumed (the fake `claude` of tests/fakes); the first agent is gone before the second starts.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

from cw import defaults
from cw.transport.celeryapp import make_app
from tests.chaos.reconciler import start_reconciler
from tests.conftest import CW, git
from tests.fakes.fake_claude_script import Done, Run, Sleep, Write, read_jsonl
from tests.integration.conftest import District, fake_claude_district

pytestmark = pytest.mark.redis

RUNS = [
    Run([Write("first.txt", "before the crash\n"), Sleep(30)], Done("never"), attempt=1),
    Run([Write("second.txt", "after the crash\n")], Done("finished"), attempt=2),
]


def invocations(d: District) -> list[dict[str, object]]:
    return read_jsonl(Path(d.env["FAKE_CLAUDE_LOG"]))


def flag(argv: object, name: str) -> str | None:
    assert isinstance(argv, list)
    return str(argv[argv.index(name) + 1]) if name in argv else None


def running_agent(d: District) -> psutil.Process:
    """The first attempt's agent, once it is at work and has named its session."""

    def started() -> bool:
        detail = d.task("t")
        runs = detail["runs"]
        assert isinstance(runs, list)
        return bool(detail["session_id"]) and bool(runs and runs[0]["pid"])

    d.wait_for(started, timeout=30, what="the agent to start")
    d.wait_for(lambda: (d.repo / ".cw/worktrees/1-t/first.txt").exists(), what="its first edit")
    runs = d.task("t")["runs"]
    assert isinstance(runs, list)
    return psutil.Process(runs[0]["pid"])


def gone(proc: psutil.Process) -> bool:
    try:
        return not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def check_recovered(d: District, agent: psutil.Process, killed_at: float) -> float:
    """The task finished once, in a second attempt that resumed the session; returns the
    seconds from the kill to the second agent's start."""
    d.wait_for(lambda: len(invocations(d)) >= 2, timeout=30, what="a second agent")
    assert gone(agent), "the first agent was stopped before the second started"
    assert d.wait_settled(timeout=30) == {"t": "done"}
    first, second = invocations(d)
    session = flag(first["argv"], "--session-id")
    assert session and flag(second["argv"], "--resume") == session, "the session was resumed"
    assert d.merged() == ["t"], "merged exactly once"
    assert git(d.repo, "show", "cw/integration:first.txt") == "before the crash"
    assert git(d.repo, "show", "cw/integration:second.txt") == "after the crash"
    assert isinstance(second["time"], float)
    return second["time"] - killed_at


def test_killing_the_pool_process_of_a_running_agent_resumes_its_session_elsewhere(
    district: Callable[..., District], tmp_path: Path
) -> None:
    d = fake_claude_district(district, tmp_path, RUNS)
    d.start_workers(agents=2)
    start_reconciler(d.processes, d.child_env(), "reconciler")
    d.submit({"t": []})
    agent = running_agent(d)
    pool = psutil.Process(agent.ppid())

    pool.kill()
    killed_at = time.time()

    took = check_recovered(d, agent, killed_at)
    print(f"RECOVERY pool kill: second agent started after {took:.1f} s")
    assert took < 25  # the lease and a reconcile pass; not the broker's 4 h redelivery


def test_killing_a_whole_worker_mid_run_moves_the_task_to_another_worker(
    district: Callable[..., District], tmp_path: Path
) -> None:
    d = fake_claude_district(district, tmp_path, RUNS)
    doomed = d.start_worker("doomed", "agents")
    d.start_worker("merge", "merge")
    start_reconciler(d.processes, d.child_env(), "reconciler")
    d.submit({"t": []})
    agent = running_agent(d)
    d.start_worker("survivor", "agents")
    d.wait_for_workers(3)  # the survivor's own start is not part of the recovery

    os.killpg(doomed.pid, signal.SIGKILL)  # the worker and its pool; the agent is orphaned
    killed_at = time.time()

    took = check_recovered(d, agent, killed_at)
    print(f"RECOVERY worker kill: second agent started after {took:.1f} s")
    runs = d.task("t")["runs"]
    assert isinstance(runs, list)
    assert [(r["attempt"], r["state"]) for r in runs] == [(1, "lost"), (2, "succeeded")]
    assert runs[0]["worker"].startswith("doomed@") and runs[1]["worker"].startswith("survivor@")
    assert took < 25  # the lease and a reconcile pass; not the broker's 4 h redelivery


def test_killing_a_merge_worker_mid_merge_has_another_merge_it_once(
    district: Callable[..., District], tmp_path: Path
) -> None:
    marker = tmp_path / "verify-started"
    d = district({
        "CW_AGENT_COMMAND": "echo work > work.txt",
        # The first verify hangs inside the merge (the worst moment to die); the next passes.
        "CW_VERIFY_COMMAND": f"if [ ! -e {marker} ]; then touch {marker}; sleep 60; fi",
    })  # fmt: skip
    before = git(d.repo, "rev-parse", "cw/integration")
    d.start_worker("agents", "agents")
    doomed = d.start_worker("doomed", "merge")
    d.submit({"m": []})
    d.wait_for(marker.exists, timeout=30, what="the merge to reach its verify step")
    d.start_worker("survivor", "merge")
    start_reconciler(d.processes, d.child_env(), "reconciler")

    os.killpg(doomed.pid, signal.SIGKILL)
    killed_at = time.time()
    assert git(d.repo, "rev-parse", "cw/integration") == before, "never half-merged"

    assert d.wait_settled(timeout=30) == {"m": "done"}
    took = float(d.task("m")["state_changed_at"]) - killed_at  # type: ignore[arg-type]
    print(f"RECOVERY merge worker kill: merged after {took:.1f} s")
    assert d.merged() == ["m"], "merged exactly once"
    assert git(d.repo, "show", "cw/integration:work.txt") == "work"
    log = d.processes.log_dir / "reconciler.log"  # its report comes after the pass's resend
    d.wait_for(lambda: '"merges": 1' in log.read_text(), what="the reconciler to say so")


def test_a_dead_agent_worker_is_recovered_while_a_long_merge_runs(
    district: Callable[..., District], tmp_path: Path
) -> None:
    """The reconciler has a worker of its own beside the merge worker: a merge held in a slow
    verify does not hold recovery up."""
    hold, verifying = tmp_path / "hold", tmp_path / "verifying"
    hold.touch()
    d = district({
        "CW_AGENT_COMMAND": 'if [ "$CW_TASK_KEY$CW_ATTEMPT" = b1 ]; then sleep 60; fi; '
                            'echo "$CW_TASK_KEY" > "$CW_TASK_KEY.txt"',
        "CW_VERIFY_COMMAND": f"touch {verifying}; while [ -e {hold} ]; do sleep 0.1; done",
    })  # fmt: skip
    doomed = d.start_worker("doomed", "agents", 2)
    d.processes.start([*CW, "worker", "--merge"], d.repo, d.child_env(), "merge")
    d.submit({"a": [], "b": []})
    d.wait_for(verifying.exists, what="a's merge to hang in its verify step")
    d.wait_for(lambda: d.states()["b"] == "running", what="b's first attempt")
    d.start_worker("survivor", "agents")
    os.killpg(doomed.pid, signal.SIGKILL)
    killed_at = time.time()

    with beat(d, every=0.5):
        d.wait_for(lambda: len(d.task("b")["runs"]) == 2, timeout=60, what="b's second attempt")  # type: ignore[arg-type]
    took = time.time() - killed_at
    print(f"RECOVERY during a long merge: b's second attempt after {took:.1f} s")
    assert d.states()["a"] == "merging", "a's merge still hangs: recovery did not wait for it"
    hold.unlink()
    assert d.wait_settled(timeout=30) == {"a": "done", "b": "done"}
    assert sorted(d.merged()) == ["a", "b"]


@contextlib.contextmanager
def beat(d: District, every: float) -> Iterator[None]:
    """What `cw beat` does, faster: send the reconcile task every ``every`` seconds."""
    app, stop = make_app(d.settings), threading.Event()

    def tick() -> None:
        while not stop.wait(every):
            app.send_task(defaults.RECONCILE_TASK, expires=every * 4)

    thread = threading.Thread(target=tick, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def name(process: psutil.Process) -> str:
    """What ps calls a process; nothing for one that has just ended (a finished git, say)."""
    try:
        return process.name()
    except psutil.Error:  # gone, or a zombie its parent has not reaped yet
        return ""


def test_the_reconcilers_worker_never_outlives_its_merge_worker(
    district: Callable[..., District],
) -> None:
    d = district({})
    merge = psutil.Process(d.processes.start([*CW, "worker", "--merge"], d.repo,
                                             d.child_env(), "merge").pid)  # fmt: skip

    def control() -> list[psutil.Process]:
        return [p for p in merge.children() if name(p) == "cw-control"]

    d.wait_for(lambda: bool(control()), what="the control worker")
    (worker,) = control()
    merge.kill()  # SIGKILL to the merge worker alone: no shutdown handler runs
    d.wait_for(lambda: gone(worker), timeout=15, what="the control worker to stop")
