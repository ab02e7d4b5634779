"""`cw server`: the whole district in one process tree, stopped cleanly and resumed.

Real everything: the `cw server` command in a subprocess with its embedded broker, real Celery
workers, the command adapter running shell agents in real worktrees.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from cw.agents import attempts
from cw.service import server as supervising
from cw.service.server import ChildSpec, Supervisor
from cw.settings import Settings
from cw.store import AttemptResult, Claim, Store
from cw.transport import broker
from tests.conftest import CW, Processes, database_env, git, init_district
from tests.factories import spec
from tests.fakes.fake_claude_script import FAKE_CLAUDE, Done, Run, Sleep, Write, read_jsonl
from tests.fakes.fake_claude_script import write_scenario as write_claude_scenario
from tests.integration.conftest import FAST
from tests.ports import free_port

#: Each attempt appends its number to a file of its own; while the flag file exists the agent
#: works "for a long time" (and is interrupted), otherwise it finishes at once.
AGENT = (
    'echo "$CW_ATTEMPT" >> "attempts-$CW_TASK_KEY.txt"; '
    'while [ -e "$SLOW_FLAG" ]; do sleep 0.2; done; echo done > "out-$CW_TASK_KEY.txt"'
)
#: An agent that ignores SIGTERM: only a forced stop ends it quickly.
STUBBORN = "trap '' TERM; sleep 120"
SHUTDOWN_BOUND_SECONDS = 45.0


@dataclass
class Server:
    repo: Path
    env: dict[str, str]
    processes: Processes
    store: Store
    proc: subprocess.Popen[bytes] | None = None

    def start(self, *args: str) -> subprocess.Popen[bytes]:
        self.proc = self.processes.start([*CW, "server", *args], self.repo, self.env, "server")
        self.wait_for(lambda: self.status()["healthy"], 60, "a healthy server")
        return self.proc

    def cw(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*CW, *args], cwd=self.repo, env=self.env, capture_output=True,
                              text=True, timeout=120)  # fmt: skip

    def status(self) -> dict[str, object]:
        result = self.cw("server", "status", "--json")
        report: dict[str, object] = json.loads(result.stdout)
        assert result.returncode == (0 if report["healthy"] else 1), result.stderr
        return report

    def tree(self) -> list[psutil.Process]:
        """The server and every process below it, taken now."""
        assert self.proc is not None
        root = psutil.Process(self.proc.pid)
        return [root, *root.children(recursive=True)]

    def terminate(self) -> float:
        """SIGTERM to the server; wait for it to exit; the seconds it took."""
        assert self.proc is not None
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        assert self.proc.wait(timeout=SHUTDOWN_BOUND_SECONDS) == 0
        return time.monotonic() - started

    def log(self) -> str:
        """What the server said (each child's stop is timed there)."""
        return (self.processes.log_dir / "server.log").read_text(errors="replace")

    def states(self) -> dict[str, str]:
        return {t["key"]: t["state"].value for t in self.store.task_rows()}

    def wait_for(self, predicate: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}: {self.states()}")
            time.sleep(0.1)


def alive(procs: list[psutil.Process]) -> list[str]:
    left = []
    for proc in procs:
        try:
            if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                left.append(f"{proc.pid} {' '.join(proc.cmdline())[:80]}")
        except psutil.NoSuchProcess:
            pass
    return left


@pytest.fixture
def server(
    make_repo: Callable[[str], Path], processes: Processes, tmp_path: Path, database_url: str
) -> Iterator[Callable[..., Server]]:
    """An initialised repository with the embedded broker; ``server(agent_command, **CW_*)``."""
    made: list[Server] = []

    def make(command: str = AGENT, **settings: str) -> Server:
        repo = make_repo("repo")
        flag = tmp_path / "slow"
        flag.touch()
        env = {**os.environ, **FAST, "CW_REPO": str(repo), "CW_AGENT_COMMAND": command,
               "CW_FLOWER_PORT": str(free_port()), "CW_WEB_PORT": str(free_port()),
               "SLOW_FLAG": str(flag),
               **database_env(database_url), **settings}  # fmt: skip
        _, store = init_district(repo, env)
        made.append(Server(repo, env, processes, store))
        return made[-1]

    yield make
    leftovers = [p for each in made if each.proc and each.proc.poll() is None for p in each.tree()]
    processes.stop_all()
    for proc in leftovers:
        if proc.is_running():
            proc.kill()
    for each in made:
        each.cw("broker", "stop")
        each.store.close()


#: What the server's process tree holds once everything runs (a, b: agents that sleep).
SERVER_PARTS = (
    "-Q merge",
    "cw-control",  # forked from the merge worker: its command line is the same
    "-Q agents",
    "beat",
    "cw fsui",
    "flower",
    "cw web",
    "redis-server",
    "sleep",
)


def _missing(tree: list[psutil.Process]) -> list[str]:
    """Those of :data:`SERVER_PARTS` no process of ``tree`` names."""
    names = set()
    for process in tree:
        with contextlib.suppress(psutil.Error):
            names.add(" ".join([process.name(), *process.cmdline()]))
    return [part for part in SERVER_PARTS if not any(part in n for n in names)]


def integration_subjects(repo: Path) -> list[str]:
    return git(repo, "log", "--first-parent", "--format=%s", "cw/integration").splitlines()


def test_sigterm_interrupts_agents_and_a_restart_resumes_them_until_the_plan_is_done(
    server: Callable[..., Server], tmp_path: Path
) -> None:
    srv = server()
    srv.store.submit(spec({"a": [], "b": [], "c": ["a", "b"]}))
    srv.start("--workers", "2")  # dispatches the ready tasks itself
    srv.wait_for(lambda: _both_agents_run(srv), 60, "a and b running")
    # The control worker is forked once the merge worker has loaded: it may come a moment later.
    srv.wait_for(lambda: _missing(srv.tree()) == [], 30, "every process of the server")
    tree = srv.tree()
    assert _missing(tree) == []
    login = srv.repo / ".cw" / "flower.credentials"
    srv.wait_for(login.exists, 30, "flower's generated login")
    assert srv.status()["flower_credentials"] == str(login) and login.stat().st_mode & 0o077 == 0

    seconds = srv.terminate()

    assert alive(tree) == [], "every process the server started is gone"
    assert not (srv.repo / ".cw" / "server.pid").exists()
    assert srv.cw("server", "status").returncode == 1
    for key in ("a", "b"):
        detail = srv.store.task_detail(srv.store.find_task_id(key))
        assert detail["state"].value in ("ready", "queued"), "resumable, by itself"
        assert {r["attempt"]: r["state"] for r in detail["runs"]}[1] == "interrupted"
        branch = str(detail["branch"])
        assert git(srv.repo, "log", "-1", "--format=%s", branch).startswith(
            f"cw: WIP (interrupted): {key}"
        )
        assert git(srv.repo, "show", f"{branch}:attempts-{key}.txt") == "1"
    assert srv.states()["c"] == "pending"

    (tmp_path / "slow").unlink()  # the resumed agents finish at once
    restarted = time.monotonic()
    srv.start("--workers", "2")
    srv.wait_for(lambda: srv.states()["c"] != "pending", 60, "a and b merged")
    resumed = time.monotonic() - restarted
    srv.wait_for(lambda: set(srv.states().values()) == {"done"}, 60, "the plan done")
    recovered = time.monotonic() - restarted
    for key in ("a", "b"):
        assert git(srv.repo, "show", f"cw/integration:attempts-{key}.txt") == "1\n2"
    assert git(srv.repo, "show", "cw/integration:attempts-c.txt") == "1"
    merges = [s for s in integration_subjects(srv.repo) if s.startswith("cw: merge")]
    assert sorted(merges) == ["cw: merge a: task a", "cw: merge b: task b", "cw: merge c: task c"]
    srv.terminate()
    print(
        f"shutdown {seconds:.1f} s; restart to a, b merged {resumed:.1f} s, to plan done "
        f"{recovered:.1f} s"
    )


def test_a_claude_agent_interrupted_by_a_shutdown_resumes_its_session_after_the_restart(
    server: Callable[..., Server], tmp_path: Path
) -> None:
    scenario = write_claude_scenario(tmp_path / "scenario.json", [
        Run([Write("part1.txt", "one\n"), Sleep(60)], Done("never"), attempt=1),
        Run([Write("part2.txt", "two\n")], Done("finished"), attempt=2),
    ])  # fmt: skip
    log = tmp_path / "invocations.jsonl"
    srv = server(CW_AGENT="claude", CW_CLAUDE_BINARY=str(FAKE_CLAUDE), HOME=str(tmp_path / "home"),
                 FAKE_CLAUDE_SCENARIO=str(scenario), FAKE_CLAUDE_LOG=str(log))  # fmt: skip
    srv.store.submit(spec({"a": []}))
    srv.start("--no-flower", "--no-fsui")
    task_id = srv.store.find_task_id("a")
    wip = srv.repo / ".cw" / "worktrees" / f"{task_id}-a" / "part1.txt"
    srv.wait_for(wip.exists, 60, "the agent's first file")
    srv.terminate()

    detail = srv.store.task_detail(task_id)
    assert detail["state"].value in ("ready", "queued")
    assert git(srv.repo, "show", f"{detail['branch']}:part1.txt") == "one"
    session = detail["session_id"]
    assert session, "the session was recorded before the agent was interrupted"

    srv.start("--no-flower", "--no-fsui")
    srv.wait_for(lambda: srv.states() == {"a": "done"}, 60, "a done")
    first, second = (call["argv"] for call in read_jsonl(log))
    assert isinstance(first, list) and isinstance(second, list)
    assert first[first.index("--session-id") + 1] == session
    assert second[second.index("--resume") + 1] == session
    for path in ("part1.txt", "part2.txt"):
        git(srv.repo, "cat-file", "-e", f"cw/integration:{path}")
    srv.terminate()


def _both_agents_run(srv: Server) -> bool:
    states = srv.states()
    if (states["a"], states["b"]) != ("running", "running"):
        return False
    return all(r["pid"] for r in srv.store.agent_rows() if r["task"] in ("a", "b"))


def test_a_second_server_refuses_in_one_line_and_status_reports_each_part(
    server: Callable[..., Server],
) -> None:
    srv = server()
    srv.start("--no-flower")
    report = srv.status()
    assert report["running"] and report["broker"] and report["database"]
    children = report["children"]
    assert isinstance(children, dict)
    assert sorted(children) == ["agents", "beat", "fsui", "merge", "web"]
    assert all(c["alive"] for c in children.values())
    assert report["web"] == f"http://127.0.0.1:{srv.env['CW_WEB_PORT']}/"
    assert f"web: {report['web']}" in srv.cw("server", "status").stdout

    for argv in (["server", "start"], ["--server"], ["server", "--detach"]):
        second = srv.cw(*argv)
        assert second.returncode == 2, argv
        assert second.stderr.count("\n") == 1, second.stderr
        assert second.stderr.startswith("cw: error: a server already runs for this district")
    assert srv.proc is not None and srv.status()["pid"] == srv.proc.pid
    misplaced = srv.cw("server", "--detach", "status")
    assert misplaced.returncode == 2 and "go with `cw server [start]`" in misplaced.stderr

    stopped = srv.cw("server", "stop")
    assert stopped.returncode == 0 and "stopped" in stopped.stdout
    assert srv.proc is not None and srv.proc.wait(timeout=5) == 0
    after = srv.cw("server", "status", "--json")
    assert after.returncode == 1
    assert json.loads(after.stdout)["running"] is False


#: An idle district stops in about 1.4 s on a quiet 2-core machine (docs/benchmarks.md); the
#: margin is for one running the suite 4-wide (4.2 s seen). It took 7-8.5 s before its workers
#: stopped at once.
IDLE_STOP_BOUND_SECONDS = 6.0


def test_an_idle_district_stops_in_seconds_by_ctrl_c_and_by_cw_server_stop(
    server: Callable[..., Server],
) -> None:
    srv = server()
    proc = srv.start()
    time.sleep(2)  # the workers' first heartbeats, beat's first tick
    tree = srv.tree()
    proc.send_signal(signal.SIGINT)  # Ctrl-C reaches the server alone: children have groups
    assert proc.wait(timeout=SHUTDOWN_BOUND_SECONDS) == 0
    assert stop_seconds(srv.log()) < IDLE_STOP_BOUND_SECONDS, srv.log()
    assert alive(tree) == []

    srv.start()
    time.sleep(2)
    tree = srv.tree()
    assert srv.cw("server", "stop").returncode == 0
    assert stop_seconds(srv.log()) < IDLE_STOP_BOUND_SECONDS, srv.log()
    assert alive(tree) == []


def stop_seconds(log: str) -> float:
    """How long the server's last stop took, as it timed it (not `cw server stop`'s own start)."""
    return float(re.findall(r"stopped \(\w+\) in ([0-9.]+) s", log)[-1])


def test_a_second_sigterm_during_a_slow_shutdown_forces_it(
    server: Callable[..., Server],
) -> None:
    srv = server(STUBBORN, CW_AGENT_KILL_GRACE="60")
    srv.store.submit(spec({"a": []}))
    srv.start("--no-flower", "--no-fsui")
    srv.wait_for(lambda: srv.states()["a"] == "running", 60, "a running")
    srv.wait_for(lambda: bool(srv.store.agent_rows()[0]["pid"]), 10, "the agent's pid")
    tree = srv.tree()
    assert srv.proc is not None
    srv.proc.send_signal(signal.SIGTERM)
    time.sleep(2)
    assert srv.proc.poll() is None, "the agent ignores SIGTERM: a graceful stop takes a minute"
    started = time.monotonic()
    srv.proc.send_signal(signal.SIGTERM)
    assert srv.proc.wait(timeout=15) == 1, "a forced shutdown says so"
    assert time.monotonic() - started < 10
    assert alive(tree) == []
    assert not (srv.repo / ".cw" / "server.pid").exists()


def test_the_detached_server_runs_in_its_own_session_and_stops_on_request(
    server: Callable[..., Server],
) -> None:
    srv = server()
    started = srv.cw("server", "start", "--detach", "--no-flower", "--no-fsui")
    assert started.returncode == 0, started.stderr
    report = srv.status()
    pid = report["pid"]
    assert isinstance(pid, int) and os.getsid(pid) == pid
    tree = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    assert srv.cw("server", "stop").returncode == 0
    assert alive(tree) == []
    log = (srv.repo / ".cw" / "logs" / "server.log").read_text()
    assert "stopped (clean)" in log


def test_a_taken_port_of_the_page_is_refused_before_anything_starts(
    server: Callable[..., Server],
) -> None:
    """Not "server started" over a web child that exits again and again."""
    srv = server()
    port = int(srv.env["CW_WEB_PORT"])
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        started = srv.cw("server", "start", "--detach", "--no-flower", "--no-fsui")
    assert started.returncode == 2, started.stderr
    assert f"port {port} on 127.0.0.1 is taken" in started.stderr
    assert "--no-web" in started.stderr
    assert srv.status()["pid"] is None, "nothing started"


def test_the_children_of_a_server_killed_by_sigkill_end_with_it(
    server: Callable[..., Server],
) -> None:
    srv = server()
    started = srv.cw("server", "start", "--detach", "--no-flower", "--no-fsui")
    assert started.returncode == 0, started.stderr
    pid = srv.status()["pid"]
    assert isinstance(pid, int)
    children = [  # the broker is not one: it serves every cw command, until `cw broker stop`
        c for c in psutil.Process(pid).children() if "redis-server" not in c.cmdline()[0]
    ]
    assert len(children) >= 3, "agents, merge, beat at least"
    os.kill(pid, signal.SIGKILL)
    try:
        deadline = time.monotonic() + 60
        while alive(children) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert alive(children) == [], "no child runs on unseen"
    finally:
        for child in children:  # whatever this test left
            with contextlib.suppress(psutil.NoSuchProcess):
                child.kill()
        srv.cw("broker", "stop")


def test_the_server_starts_a_dead_embedded_broker_again(server: Callable[..., Server]) -> None:
    srv = server()
    srv.start("--no-flower", "--no-fsui", "--no-web")
    redis = [p for p in srv.tree() if "redis-server" in p.cmdline()[0]]
    assert len(redis) == 1
    redis[0].kill()
    srv.wait_for(
        lambda: srv.status()["broker"] is True and not redis[0].is_running(),
        30,
        "the broker again",
    )


def test_the_supervisor_starts_a_broker_whose_process_is_gone(
    make_repo: Callable[[str], Path], database_url: str
) -> None:
    repo = make_repo("repo")
    settings, store = init_district(repo, {"CW_REPO": str(repo), **database_env(database_url)})
    store.close()
    supervisor = Supervisor(settings, [])
    assert not broker.embedded_running(settings)
    try:
        supervisor._keep_broker()
        assert broker.embedded_running(settings)
        pid = broker.embedded_pid(settings)
        supervisor._keep_broker()  # it answers: nothing to do
        assert broker.embedded_pid(settings) == pid
    finally:
        broker.stop_embedded(settings)


def test_a_child_that_keeps_exiting_is_started_again_after_a_pause_not_given_up(
    make_repo: Callable[[str], Path], database_url: str
) -> None:
    """An OOM killer or a full disk kills the merge worker three times: it comes back once
    that has passed (it was left dead, merges stalled, until a person restarted the server);
    a state file the full disk cannot take is logged, not a crash of the server."""
    repo = make_repo("repo")
    settings, store = init_district(repo, {"CW_REPO": str(repo), **database_env(database_url)})
    store.close()
    supervisor = Supervisor(settings, [])
    try:
        _restarts_after_a_pause(supervisor, settings)
    finally:
        broker.stop_embedded(settings)  # the supervisor's watch starts the district's broker


def _restarts_after_a_pause(supervisor: Supervisor, settings: Settings) -> None:
    quick = ChildSpec("quick", ["--version"], stop_seconds=5)  # exits at once, every time
    first = supervisor._start(quick)
    for _ in range(supervising.MAX_QUICK_EXITS):
        supervisor.children["quick"].proc.wait(timeout=60)
        supervisor._watch()
    child = supervisor.children["quick"]
    assert child.retry_at is not None and child.proc is not first.proc, "paused, not given up"
    supervisor._watch()
    assert supervisor.children["quick"] is child, "not before the pause is over"
    child.retry_at = time.monotonic()
    serverctl_tmp = supervising.state_path(settings).with_suffix(".tmp")
    serverctl_tmp.mkdir()  # the state file cannot be written
    supervisor._watch()
    again = supervisor.children["quick"]
    assert again is not child and again.retry_at is None, "started again"
    again.proc.wait(timeout=60)
    again.retry_at = time.monotonic()  # due again; this time the fork fails (no memory)

    def no_fork(_spec: ChildSpec) -> None:
        raise OSError(12, "Cannot allocate memory")

    supervisor._start = no_fork  # type: ignore[method-assign,assignment]
    supervisor._watch()
    assert supervisor.children["quick"] is again and again.retry_at is not None, "later"


def test_an_attempt_starting_as_its_worker_shuts_down_is_interrupted_at_once(
    make_repo: Callable[[str], Path], database_url: str
) -> None:
    repo = make_repo("repo")
    env = {"CW_REPO": str(repo), "CW_AGENT_COMMAND": "sleep 60", **database_env(database_url)}
    settings, store = init_district(repo, env)
    store.submit(spec({"a": []}))
    (claim,) = store.claim_ready_tasks()
    worker = f"cw-agents-{os.getpid()}@host"
    # run_attempt runs here, as in a pool process: its worker is this process's parent
    assert attempts.interrupt_attempts(store, worker, os.getppid()) == 0, "nothing runs yet"
    started = time.monotonic()
    assert attempts.run_attempt(settings, store, claim, worker=worker)
    assert time.monotonic() - started < 20, "not the agent's 60 s"
    assert store.task_state(claim.task_id).value == "ready"
    again = store.claim_ready_tasks()
    assert again == [Claim(claim.task_id, claim.attempt + 1)]
    store.start_attempt(again[0], worker="another@host", host="h", lease_seconds=30)
    assert not store.shutdown_requested(again[0])
    store.finish_attempt(again[0], AttemptResult(outcome="done"), "command")
    store.close()


def control_workers(merge: psutil.Process) -> list[psutil.Process]:
    found = []
    for child in merge.children():
        try:
            if child.name() == "cw-control" and child.status() != psutil.STATUS_ZOMBIE:
                found.append(child)  # its command line is the merge worker's
        except psutil.Error:  # a process that ends as we look
            continue
    return found


def test_the_merge_worker_returns_only_once_its_control_worker_is_gone(
    server: Callable[..., Server], processes: Processes
) -> None:
    srv = server()
    proc = processes.start([*CW, "worker", "--merge"], srv.repo, srv.env, "merge")
    merge = psutil.Process(proc.pid)
    srv.wait_for(lambda: bool(control_workers(merge)), 60, "the control worker")
    (worker,) = control_workers(merge)
    log = processes.log_dir / "merge.log"
    srv.wait_for(lambda: log.read_text().count(" ready.") == 2, 60, "both workers ready")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
    assert alive([worker]) == [], "cw worker --merge returned before its control worker ended"


def test_a_control_worker_that_dies_is_started_again_by_its_merge_worker(
    server: Callable[..., Server], processes: Processes
) -> None:
    """Killed alone (out of memory, say), it took every reconciler pass of the host with it,
    and nothing said so: a dead agent worker's task stayed running for hours."""
    srv = server()
    proc = processes.start([*CW, "worker", "--merge"], srv.repo, srv.env, "merge")
    merge = psutil.Process(proc.pid)
    log = processes.log_dir / "merge.log"
    srv.wait_for(lambda: log.read_text().count(" ready.") == 2, 60, "both workers ready")
    (first,) = control_workers(merge)
    first.kill()
    srv.wait_for(
        lambda: [w.pid for w in control_workers(merge)] not in ([], [first.pid]), 60, "another"
    )
    (second,) = control_workers(merge)
    srv.wait_for(lambda: log.read_text().count(" ready.") == 3, 60, "the new one ready")
    assert f"the control worker (pid {first.pid}) was killed by signal 9" in log.read_text()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
    assert alive([second]) == [], "and stopped with its merge worker"


def test_a_worker_restarted_under_its_old_name_in_the_same_second_runs_its_attempts(
    make_repo: Callable[[str], Path], database_url: str
) -> None:
    """A worker's start time is known to a second at best: the shutdown of the worker it
    replaces (same name, another main process) must not read as its own."""
    repo = make_repo("repo")
    env = {"CW_REPO": str(repo), "CW_AGENT_COMMAND": "echo done > done.txt",
           **database_env(database_url)}  # fmt: skip
    settings, store = init_district(repo, env)
    try:
        store.submit(spec({"a": []}))
        worker, old = "agents@host", os.getppid() + 100_000  # the old worker's main process
        attempts.interrupt_attempts(store, worker, pid=old)
        assert store.worker_shutting_down(worker, old, since=time.time() - 5)
        (claim,) = store.claim_ready_tasks()
        assert attempts.run_attempt(settings, store, claim, worker=worker)
        assert store.task_state(claim.task_id).value == "merging", "it ran, not interrupted"
    finally:
        store.close()
