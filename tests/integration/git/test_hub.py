"""Two "machines" meet at a shared bare repository: separate clones, separate workers."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from pathlib import Path

import pytest

from cw import defaults
from cw.agents.attempts import run_attempt
from cw.agents.lease import Publisher
from cw.errors import GitError, HubError
from cw.git import merging
from cw.git.hub import fetch_branch
from cw.settings import Settings
from cw.store import Store
from cw.store.records import machinery_backoff, machinery_retries
from cw.transport.celeryapp import make_app, worker_argv
from cw.transport.dispatch import dispatch_ready
from tests.conftest import CW, GIT_ID, Processes, database_env, git, init_district
from tests.factories import spec
from tests.integration.conftest import seeded_hub

pytestmark = pytest.mark.redis

AGENT = 'echo "$CW_TASK_KEY on $HOST_NAME" > "$CW_TASK_KEY.txt"\n'


def host_env(clone: Path, db: str, redis_url: str, hub: Path, agent: Path) -> dict[str, str]:
    return {
        **os.environ, **GIT_ID, "CW_REPO": str(clone), "CW_DATABASE_URL": db,
        "CW_BROKER_URL": redis_url, "CW_GIT_HUB": str(hub), "CW_AGENT_COMMAND": f"sh {agent}",
        "CW_HEARTBEAT": "0.5", "HOST_NAME": clone.name,
    }  # fmt: skip


def worker(processes: Processes, env: dict[str, str], name: str, queue: str) -> None:
    processes.start(worker_argv(queue, 1, f"{name}@%h"), Path(env["CW_REPO"]), env, name)


def test_two_hosts_share_a_plan_through_the_hub_and_every_task_merges(
    tmp_path: Path, redis_url: str, processes: Processes, database_url: str
) -> None:
    """Each host needs only the broker URL, the database URL and the hub. On SQLite both share
    a file on this machine; with CW_TEST_DATABASE_URL (the PostgreSQL pass of `make test`) they
    share one PostgreSQL database, as real hosts do."""
    hub = seeded_hub(tmp_path)
    host_a, host_b = tmp_path / "host-a", tmp_path / "host-b"
    for host in (host_a, host_b):
        git(tmp_path, "clone", "-q", str(hub), str(host))
    agent = tmp_path / "agent.sh"
    agent.write_text(AGENT)
    db = database_url
    env_a = host_env(host_a, db, redis_url, hub, agent)
    env_b = host_env(host_b, db, redis_url, hub, agent)
    git(host_b, "commit", "-q", "--allow-empty", "-m", "a local commit the hub never saw")
    said = [
        subprocess.run(
            [*CW, "init"], cwd=env["CW_REPO"], env=env, check=True, capture_output=True, text=True
        ).stdout
        for env in (env_a, env_b)
    ]
    hub_sha = git(hub, "rev-parse", "cw/integration")
    assert f"at {hub_sha[:10]}, published to the hub" in said[0]
    assert f"at {hub_sha[:10]}, taken from the hub" in said[1], "host B names the hub's sha"
    worker(processes, env_a, "agents-a", "agents")
    worker(processes, env_b, "agents-b", "agents")
    worker(processes, env_a, "merge-a", "merge")

    settings = Settings.load(env={k: v for k, v in env_a.items() if k.startswith("CW_")})
    store = Store.open(settings.db_url)
    edges = {f"t{i}": [] for i in range(6)} | {"last": [f"t{i}" for i in range(6)]}
    store.submit(spec(edges))
    dispatch_ready(store, make_app(settings))
    _wait_done(store, len(edges))

    hub_files = git(hub, "ls-tree", "--name-only", "cw/integration").splitlines()
    assert sorted(f for f in hub_files if f.endswith(".txt")) == sorted(f"{k}.txt" for k in edges)
    hosts = {git(hub, "show", f"cw/integration:{k}.txt").split(" on ")[1] for k in edges}
    assert hosts == {"host-a", "host-b"}, "both hosts did work"
    last = git(hub, "show", "cw/integration:last.txt")
    assert last.startswith("last on"), "the dependent saw every dependency's merge via the hub"
    store.close()


def _wait_done(store: Store, total: int, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        states = [t["state"].value for t in store.task_rows()]
        if states.count("done") == total:
            return
        if set(states) & {"failed", "conflict", "blocked"}:
            raise AssertionError(f"a task did not merge: {store.task_rows()}")
        time.sleep(0.2)
    raise AssertionError(f"not done after {timeout}s: {[t['state'] for t in store.task_rows()]}")


def test_an_attempt_lost_while_its_agent_ran_leaves_the_hubs_branch_to_its_successor(
    tmp_path: Path, redis_url: str, database_url: str
) -> None:
    """A stalled worker's attempt was released, and the next attempt (here: another clone)
    pushed the task branch: the stalled attempt's own end must not overwrite it."""
    hub = seeded_hub(tmp_path)
    here, there = tmp_path / "here", tmp_path / "there"
    for clone in (here, there):
        git(tmp_path, "clone", "-q", str(hub), str(clone))
    agent = "echo one > one.txt && git add -A && git commit -qm one && sleep 30"
    settings, store = init_district(here, {
        **GIT_ID, "CW_REPO": str(here), "CW_BROKER_URL": redis_url, "CW_GIT_HUB": str(hub),
        "CW_AGENT_COMMAND": agent, "CW_HEARTBEAT": "0.2", **database_env(database_url),
    })  # fmt: skip
    try:
        store.submit(spec({"a": []}))
        (claim,) = store.claim_ready_tasks()
        runner = threading.Thread(target=run_attempt, args=(settings, store, claim, "w1@here"))
        runner.start()
        branch = _wait_for_hub_branch(hub)  # the agent's commit, published at a heartbeat
        assert store.release_lost_attempts(time.time() + 60), "its lease ran out"
        git(there, "fetch", "-q", "origin", branch)
        git(there, "checkout", "-q", "-b", "successor", "FETCH_HEAD")
        git(there, "commit", "-q", "--allow-empty", "-m", "the next attempt's work")
        successor = git(there, "rev-parse", "HEAD")
        git(there, "push", "-q", "origin", f"HEAD:refs/heads/{branch}")
        runner.join(timeout=60)
        assert not runner.is_alive(), "the agent of a lost attempt is stopped"
        assert git(hub, "rev-parse", branch) == successor
    finally:
        store.close()


def _wait_for_hub_branch(hub: Path) -> str:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        refs = git(hub, "for-each-ref", "--format=%(refname:short)", "refs/heads/cw/task")
        if refs:
            return refs.splitlines()[0]
        time.sleep(0.1)
    raise AssertionError("the task branch never reached the hub")


def test_commits_a_failed_push_left_here_reach_the_hub_while_the_next_attempt_runs(
    tmp_path: Path, redis_url: str, database_url: str
) -> None:
    """Attempt 1 committed and failed, and its push failed too (the hub away): its failure is
    recorded all the same, and attempt 2 here publishes those commits at its first heartbeat
    (it published nothing until its agent committed again: a host lost meanwhile lost them)."""
    hub = seeded_hub(tmp_path)
    here = tmp_path / "here"
    git(tmp_path, "clone", "-q", str(hub), str(here))
    agent = (
        "if [ -e one.txt ]; then sleep 15; else echo one > one.txt && git add -A && "
        'git commit -qm one && mv "$HUB" "$HUB.away" && exit 1; fi'
    )
    settings, store = init_district(here, {
        **GIT_ID, "CW_REPO": str(here), "CW_BROKER_URL": redis_url, "CW_GIT_HUB": str(hub),
        "CW_AGENT_COMMAND": agent, "CW_HEARTBEAT": "0.2", **database_env(database_url),
    })  # fmt: skip
    os.environ["HUB"] = str(hub)
    try:
        store.submit(spec({"a": []}))
        (claim,) = store.claim_ready_tasks()
        run_attempt(settings, store, claim, "w1@here")
        assert store.task_state(claim.task_id).value == "failed", "not retried as cw's failure"
        Path(f"{hub}.away").rename(hub)
        store.retry_task(claim.task_id)
        (again,) = store.claim_ready_tasks()
        runner = threading.Thread(target=run_attempt, args=(settings, store, again, "w1"))
        started = time.monotonic()
        runner.start()
        # The hub may hold the branch already, at its start: attempt 1 pushed it at a heartbeat.
        shown = ["git", "show", "cw/task/1-a:one.txt"]
        while subprocess.run(shown, cwd=hub, capture_output=True).returncode != 0:
            assert runner.is_alive(), "the attempt ended before its commits reached the hub"
            time.sleep(0.1)
        assert time.monotonic() - started < 10, "published at a heartbeat, not at the end (15 s)"
        runner.join(timeout=60)
    finally:
        del os.environ["HUB"]
        store.close()


def test_a_push_from_a_host_cut_off_never_overwrites_the_work_of_the_attempt_after_it(
    tmp_path: Path,
) -> None:
    """The lost attempt's push may connect after the next attempt's: it expects the hub to
    hold what it saw there, and is refused instead of putting the older work back."""
    hub = seeded_hub(tmp_path)
    here, there = tmp_path / "here", tmp_path / "there"
    for clone in (here, there):
        git(tmp_path, "clone", "-q", str(hub), str(clone))
    branch = "cw/task/1-a"
    git(here, "checkout", "-q", "-b", branch)
    git(here, "commit", "-q", "--allow-empty", "-m", "the lost attempt's first work")
    settings = Settings.load(env={"CW_REPO": str(here), "CW_GIT_HUB": str(hub)})
    publish = Publisher(settings, branch, None)
    publish.push()
    git(there, "fetch", "-q", "origin", branch)
    git(there, "checkout", "-q", "-b", branch, "FETCH_HEAD")
    git(there, "commit", "-q", "--allow-empty", "-m", "the next attempt's work")
    git(there, "push", "-q", "origin", branch)
    successor = git(there, "rev-parse", "HEAD")
    git(here, "commit", "-q", "--allow-empty", "-m", "the lost attempt's late work")
    with pytest.raises(GitError):
        publish.push()
    assert git(hub, "rev-parse", branch) == successor


def test_the_hub_away_is_tried_again_for_half_an_hour_not_a_minute(tmp_path: Path) -> None:
    """Five retries, doubling from 2 s: a hub away for 64 s failed every task sent meanwhile,
    for good."""
    here = tmp_path / "here"
    git(tmp_path, "init", "-q", "-b", "main", str(here))
    with pytest.raises(HubError) as away:
        fetch_branch(here, str(tmp_path / "gone.git"), "main", "refs/cw-hub/main")
    retries = machinery_retries(away.value)
    waits = [machinery_backoff(defaults.MACHINERY_RETRY_SECONDS, n) for n in range(1, retries + 1)]
    assert 25 * 60 < sum(waits) < 40 * 60 and max(waits) <= 300
    assert machinery_retries(GitError("a local git failure")) == defaults.MACHINERY_RETRIES


def test_a_hub_branch_an_earlier_district_left_under_a_tasks_name_is_replaced(
    tmp_path: Path, database_url: str
) -> None:
    """Task ids start again at 1 in a new database: the hub's old `cw/task/1-a` refused every
    push of the new task 1 (its lease said "no such branch yet"), and its retry took the old
    branch for newer work: the old district's content was merged and the task called done."""
    hub = seeded_hub(tmp_path)
    old = tmp_path / "old"
    git(tmp_path, "clone", "-q", str(hub), str(old))
    (old / "stale.txt").write_text("an earlier district's task 1\n")
    git(old, "add", "-A")
    git(old, "commit", "-q", "-m", "old")
    git(old, "push", "-q", str(hub), "HEAD:refs/heads/cw/task/1-a")
    here = tmp_path / "here"
    git(tmp_path, "clone", "-q", str(hub), str(here))
    settings, store = init_district(here, {
        **GIT_ID, "CW_REPO": str(here), "CW_GIT_HUB": str(hub),
        "CW_AGENT_COMMAND": "echo hi > hi.txt", **database_env(database_url),
    })  # fmt: skip
    try:
        store.submit(spec({"a": []}))
        (claim,) = store.claim_ready_tasks()
        run_attempt(settings, store, claim, "w")
        assert store.task_state(claim.task_id).value == "merging"
        merging.merge_attempt(settings, store, claim)
        assert store.task_state(claim.task_id).value == "done"
        merged = git(hub, "ls-tree", "--name-only", settings.integration_branch).split()
        assert "hi.txt" in merged and "stale.txt" not in merged
    finally:
        store.close()
