"""Two "machines" meet at a shared bare repository: separate clones, separate workers."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cw.celeryapp import make_app
from cw.dispatch import dispatch_ready
from cw.settings import Settings
from cw.store import Store
from tests.conftest import CW, GIT_ID, Processes, git
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


def worker(processes: Processes, env: dict[str, str], name: str, *queue: str) -> None:
    argv = [sys.executable, "-m", "celery", "-A", "workers", "worker", "-P", "prefork",
            "--without-gossip", "--without-mingle", "-n", f"{name}@%h", *queue]  # fmt: skip
    processes.start(argv, Path(env["CW_REPO"]), env, name)


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
    worker(processes, env_a, "agents-a", "-Q", "agents", "-c", "1")
    worker(processes, env_b, "agents-b", "-Q", "agents", "-c", "1")
    worker(processes, env_a, "merge-a", "-Q", "merge", "-c", "1")

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
