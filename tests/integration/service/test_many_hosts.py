"""Two hosts, one dies: its tasks finish on the other, its agents' commits are kept, and
housekeeping leaves nothing behind on either host or the hub.

Two clones at different paths with different ``CW_HOST`` names share the suite's Redis, one
database (a SQLite file both open, or PostgreSQL in the PostgreSQL pass) and one bare hub.
Host B's worker is SIGKILLed with its agents mid-run and never comes back.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest

from cw.settings import Settings
from cw.store import Store
from cw.transport.celeryapp import make_app, worker_argv
from cw.transport.dispatch import dispatch_ready
from tests.chaos.reconciler import start_reconciler
from tests.conftest import CW, GIT_ID, Processes, git
from tests.factories import spec
from tests.integration.conftest import FAST, seeded_hub

pytestmark = pytest.mark.redis

#: Commits a first step at once (pushed to the hub by the next heartbeat), then works: for
#: ever on host B (until it dies), a moment on host A. A later attempt keeps the first step.
AGENT = """\
set -e
if [ ! -f "$CW_TASK_KEY.first" ]; then
  echo "$CW_TASK_KEY started on $CW_HOST" > "$CW_TASK_KEY.first"
  git add "$CW_TASK_KEY.first"
  git commit -q -m "$CW_TASK_KEY: first step on $CW_HOST"
fi
if [ "$CW_HOST" = host-b ]; then sleep 120; fi
echo "$CW_TASK_KEY on $CW_HOST" > "$CW_TASK_KEY.txt"
"""
#: 12 tasks in three layers of four, each after two of the layer before.
EDGES = {f"a{i}": [] for i in range(4)} | {
    f"{layer}{i}": [f"{before}{i}", f"{before}{(i + 1) % 4}"]
    for layer, before in (("b", "a"), ("c", "b"))
    for i in range(4)
}


def host_env(
    clone: Path, host: str, db: str, redis_url: str, hub: Path, agent: Path
) -> dict[str, str]:
    return {
        **os.environ,
        **GIT_ID,
        **FAST,
        "CW_REPO": str(clone),
        "CW_HOST": host,
        "CW_DATABASE_URL": db,
        "CW_BROKER_URL": redis_url,
        "CW_GIT_HUB": str(hub),
        "CW_AGENT_COMMAND": f"sh {agent}",
    }


def start_worker(processes: Processes, env: dict[str, str], name: str, queue: str) -> int:
    argv = worker_argv(queue, 2 if queue == "agents" else 1, f"{name}@%h")
    return processes.start(argv, Path(env["CW_REPO"]), env, name).pid


def cw(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CW, *args], cwd=env["CW_REPO"], env=env, capture_output=True, text=True, timeout=120
    )


def kill_host(pid: int) -> None:
    """SIGKILL a worker, its pool and every agent they started, as a host that dies."""
    root = psutil.Process(pid)
    tree = [root, *root.children(recursive=True)]
    for proc in tree:
        try:
            os.killpg(os.getpgid(proc.pid), signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def wait(predicate: object, timeout: float, what: str) -> None:
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def pushed_first_steps(store: Store, hub: Path) -> dict[str, str]:
    """Tasks running on host B whose first step is on the hub: key -> the hub's sha."""
    running = {
        r["task"]
        for r in store.agent_rows()
        if r["run_state"] == "running" and str(r["worker"]).startswith("agents-b@")
    }
    found = {}
    for task in store.workspaces():
        if task["key"] in running and task["branch"]:
            sha = git(hub, "for-each-ref", "--format=%(objectname)", f"refs/heads/{task['branch']}")
            if sha and "first step on host-b" in git(hub, "log", "-1", "--format=%s", sha):
                found[task["key"]] = sha
    return found


def unpushed_work(env: dict[str, str], hub: Path) -> list[str]:
    """The task branches gc keeps on a host: a killed agent may have committed a first step
    it never pushed; that commit is in no other copy, so gc must keep it and say why."""
    report = json.loads(cw(env, "gc", "--dry-run", "--json").stdout)
    kept = sorted(i["target"] for i in report["kept"] if i["kind"] == "branch")
    for branch in kept:
        assert branch.startswith("cw/task/"), report
        sha = git(Path(env["CW_REPO"]), "rev-parse", branch)
        on_hub = subprocess.run(["git", "cat-file", "-e", f"{sha}^{{commit}}"], cwd=hub)
        assert on_hub.returncode != 0, f"{branch} was pushed, yet kept: {report}"
    return kept


def leftovers(clone: Path) -> list[str]:
    worktrees = git(clone, "worktree", "list", "--porcelain").count("\nworktree ")
    refs = git(
        clone,
        "for-each-ref",
        "--format=%(refname)",
        "refs/heads/cw/task",
        "refs/cw-hub/heads/cw/task",
    ).split()
    return [f"{worktrees} task worktree(s)"] * bool(worktrees) + refs


@pytest.mark.hosts
def test_a_dead_host_costs_no_task_and_no_commit_and_leaves_nothing_behind(
    tmp_path: Path, redis_url: str, processes: Processes, database_url: str
) -> None:
    hub = seeded_hub(tmp_path)
    host_a, host_b = tmp_path / "first" / "clone", tmp_path / "second-machine" / "work"
    for clone in (host_a, host_b):
        clone.parent.mkdir()
        git(tmp_path, "clone", "-q", str(hub), str(clone))
    agent = tmp_path / "agent.sh"
    agent.write_text(AGENT)
    env_a = host_env(host_a, "host-a", database_url, redis_url, hub, agent)
    env_b = host_env(host_b, "host-b", database_url, redis_url, hub, agent)
    for env in (env_a, env_b):
        assert cw(env, "init").returncode == 0
    start_reconciler(processes, env_a, "reconciler-a")
    start_worker(processes, env_a, "agents-a", "agents")
    start_worker(processes, env_a, "merge-a", "merge")
    worker_b = start_worker(processes, env_b, "agents-b", "agents")

    settings = Settings.load(env={k: v for k, v in env_a.items() if k.startswith("CW_")})
    store = Store.open(settings.db_url)
    app = make_app(settings)
    wait(lambda: len(app.control.ping(timeout=0.5)) >= 3, 60, "three workers")
    store.submit(spec(EDGES))
    dispatch_ready(store, app)
    wait(lambda: pushed_first_steps(store, hub), 60, "host B's agents to push a first step")
    time.sleep(1)  # a second agent of host B may push its own
    stranded = pushed_first_steps(store, hub)
    kill_host(worker_b)

    active = {"pending", "ready", "queued", "running", "merging"}
    wait(lambda: not {t["state"].value for t in store.task_rows()} & active, 75, "the plan")
    states = {t["key"]: (t["state"].value, t["last_error"]) for t in store.task_rows()}
    assert not {k: v for k, v in states.items() if v[0] != "done"}, "tasks not done"
    for key, sha in stranded.items():
        assert git(hub, "merge-base", "--is-ancestor", sha, "cw/integration") == "", key
        assert git(hub, "show", f"cw/integration:{key}.first") == f"{key} started on host-b"
        assert git(hub, "show", f"cw/integration:{key}.txt") == f"{key} on host-a"
        detail = store.task_detail(store.find_task_id(key))
        runs = sorted(detail["runs"], key=lambda r: r["attempt"])
        assert (runs[0]["host"], runs[0]["state"]) == ("host-b", "lost")
        assert (runs[-1]["host"], runs[-1]["state"]) == ("host-a", "succeeded")
        assert Path(runs[-1]["worktree"]).parent == host_a / ".cw" / "worktrees"
        assert detail["worktree"] == runs[-1]["worktree"], "the task shows host A's worktree"
        shown = cw(env_b, "task", "show", key).stdout
        assert f"(host host-b, {host_b / '.cw' / 'worktrees'}" in shown
        assert f"(host host-a, {runs[-1]['worktree']})" in shown
        assert f"{runs[-1]['worktree']} (on host-a)" in shown, "not '(removed)': it is elsewhere"

    said = {host: cw(env, "gc") for host, env in (("a", env_a), ("b", env_b))}
    assert all(r.returncode == 0 for r in said.values()), said
    assert "removed hub branch cw/task/" in said["a"].stdout + said["b"].stdout
    assert leftovers(host_a) == []
    assert leftovers(host_b) == [f"refs/heads/{b}" for b in unpushed_work(env_b, hub)]
    assert git(hub, "for-each-ref", "refs/heads/cw/task") == "", "no task branch on the hub"
    for env in (env_a, env_b):
        doctor = cw(env, "doctor")
        assert doctor.returncode == 0, doctor.stdout
    store.close()


def test_a_host_without_the_merge_worker_removes_its_own_finished_worktrees(
    tmp_path: Path, redis_url: str, processes: Processes, database_url: str
) -> None:
    """The merge worker removes only its own host's worktrees; an agent worker elsewhere
    removes its host's once their tasks have been done ``stale_worktree_seconds``."""
    hub = seeded_hub(tmp_path)
    merge_host, agent_host = tmp_path / "merge-host", tmp_path / "agent-host"
    for clone in (merge_host, agent_host):
        git(tmp_path, "clone", "-q", str(hub), str(clone))
    agent = tmp_path / "agent.sh"
    agent.write_text('echo "$CW_TASK_KEY" > "$CW_TASK_KEY.txt"\n')
    env_m = host_env(merge_host, "merge-host", database_url, redis_url, hub, agent)
    env_w = host_env(agent_host, "agent-host", database_url, redis_url, hub, agent)
    env_w["CW_STALE_WORKTREE_SECONDS"] = "1"
    for env in (env_m, env_w):
        assert cw(env, "init").returncode == 0
    start_worker(processes, env_m, "merge-m", "merge")
    start_worker(processes, env_w, "agents-w", "agents")
    settings = Settings.load(env={k: v for k, v in env_m.items() if k.startswith("CW_")})
    store = Store.open(settings.db_url)
    app = make_app(settings)
    wait(lambda: len(app.control.ping(timeout=0.5)) >= 2, 60, "two workers")
    store.submit(spec({"x": [], "y": ["x"]}))
    dispatch_ready(store, app)
    wait(lambda: {t["state"].value for t in store.task_rows()} == {"done"}, 60, "the plan")
    for key in ("x", "y"):
        runs = store.task_detail(store.find_task_id(key))["runs"]
        assert [Path(r["worktree"]).parent for r in runs] == [agent_host / ".cw" / "worktrees"]
    worktrees = agent_host / ".cw" / "worktrees"

    def registered() -> int:
        return git(agent_host, "worktree", "list", "--porcelain").count("\nworktree ")

    # a removal moves the directory aside first and has git forget it next: wait for both
    wait(lambda: not registered(), 60, "the agent host's worktrees to be forgotten by git")
    assert not any(worktrees.glob("[0-9]*"))
    store.close()
