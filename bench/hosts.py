"""Recovery after a host dies: from its SIGKILL to its task running again on another host.

    .venv/bin/python bench/hosts.py [RUNS]      # prints the JSON result (about a minute a run)

Each run makes a district of two hosts as docs/several-machines.md describes them, on this
machine: a bare hub, two clones at different paths with ``CW_HOST`` host-a and host-b, one
SQLite database both open, one Redis (a private ``redis-server``). Host A runs the merge
worker (with the reconciler's control worker) and ``cw beat``, host B an agent worker, all
with the default lease (30 s), heartbeat (5 s) and reconciler period (15 s). One task goes to
host B, whose agent commits a first step and then works on; once that commit is on the hub,
host A starts an agent worker, and host B's worker and agent are SIGKILLed with their process
groups. Measured from the database's and the agent's clocks:

- **lease expiry**: the kill to the reconciler's release of the lost attempt;
- **dispatch**: the release to the new attempt's start on host A;
- **worktree from the hub**: the attempt's start to its agent's start (the task branch
  fetched from the hub, the worktree made, the agent launched);

and their sum, the recovery. Reported: per-run seconds and the median of each part.
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import redis

TOP = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TOP))

from bench.merge import _CW, _ENV  # noqa: E402
from cw.settings import Settings  # noqa: E402
from cw.store import Store  # noqa: E402
from cw.transport.celeryapp import make_app  # noqa: E402

# Host A's agent notes when it starts; host B's works until it is killed.
_AGENT = """\
if [ "$CW_HOST" = host-a ]; then date +%s.%N > "$BENCH_STARTED"; fi
if [ ! -f first.txt ]; then
  echo first > first.txt && git add first.txt && git commit -q -m "first step on $CW_HOST"
fi
if [ "$CW_HOST" = host-b ]; then sleep 600; fi
echo done > done.txt
"""
_PLAN = "initiative: recovery\ntasks:\n  - {id: t, prompt: work}\n"
_TIMEOUT_SECONDS = 180.0


def _git(cwd: Path, *args: str) -> str:
    out = subprocess.run(["git", *args], cwd=cwd, env=_ENV, check=True, capture_output=True)
    return out.stdout.decode().strip()


def _subject(repo: Path, ref: str) -> str:
    """The subject of ``ref``'s commit; empty while ``ref`` does not exist."""
    out = subprocess.run(
        ["git", "log", "-1", "--format=%s", ref, "--"], cwd=repo, capture_output=True, text=True
    )
    return out.stdout.strip() if out.returncode == 0 else ""


def _wait(predicate: Callable[[], object], what: str) -> None:
    deadline = time.monotonic() + _TIMEOUT_SECONDS
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"bench/hosts.py: timed out waiting for {what}")
        time.sleep(0.1)


class _District:
    def __init__(self, top: Path, redis_url: str) -> None:
        self.top = top
        self.procs: list[subprocess.Popen[bytes]] = []
        self.hub = top / "hub.git"
        _git(top, "init", "-q", "--bare", "-b", "main", str(self.hub))
        seed = top / "seed"
        _git(top, "init", "-q", "-b", "main", str(seed))
        (seed / "README.md").write_text("bench\n")
        _git(seed, "add", "-A")
        _git(seed, "commit", "-q", "-m", "first")
        _git(seed, "push", "-q", str(self.hub), "main")
        (top / "agent.sh").write_text(_AGENT)
        self.started = top / "agent-started"
        common = {
            "CW_DATABASE_URL": f"sqlite:///{top / 'cw.db'}",
            "CW_BROKER_URL": redis_url,
            "CW_GIT_HUB": str(self.hub),
            "CW_AGENT_COMMAND": f"sh {top / 'agent.sh'}",
            "BENCH_STARTED": str(self.started),
        }
        self.env = {}
        for host, path in (("host-a", top / "a" / "clone"), ("host-b", top / "b" / "work")):
            path.parent.mkdir()
            _git(top, "clone", "-q", str(self.hub), str(path))
            self.env[host] = {**_ENV, **common, "CW_REPO": str(path), "CW_HOST": host}
            subprocess.run(
                [*_CW, "init"], cwd=path, env=self.env[host], check=True, capture_output=True
            )

    def start(self, host: str, *args: str) -> int:
        env = self.env[host]
        log = open(self.top / f"{host}-{len(self.procs)}.log", "wb")
        proc = subprocess.Popen(
            [*_CW, *args],
            cwd=env["CW_REPO"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        self.procs.append(proc)
        return proc.pid

    def stop(self) -> None:
        for proc in self.procs:
            _kill_tree(proc.pid)
            proc.wait()


def _kill_tree(pid: int) -> None:
    """SIGKILL a process, everything it started and their process groups: a host that dies."""
    try:
        root = psutil.Process(pid)
        tree = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return
    for proc in tree:
        try:
            os.killpg(os.getpgid(proc.pid), signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def _one_run(top: Path, redis_url: str) -> dict[str, float]:
    d = _District(top, redis_url)
    try:
        d.start("host-a", "worker", "--merge")
        d.start("host-a", "beat")
        host_b = d.start("host-b", "worker", "--concurrency", "1")
        plan = top / "plan.yaml"
        plan.write_text(_PLAN)
        env_a = d.env["host-a"]
        subprocess.run(
            [*_CW, "submit", "plan", str(plan)],
            cwd=env_a["CW_REPO"],
            env=env_a,
            check=True,
            capture_output=True,
        )
        branch = "refs/heads/cw/task/1-t"
        _wait(lambda: "first step" in _subject(d.hub, branch), "host B's first step on the hub")
        d.start("host-a", "worker", "--concurrency", "1")
        settings = Settings.load(env={k: v for k, v in env_a.items() if k.startswith("CW_")})
        store = Store.open(settings.db_url)
        try:
            _wait(lambda: _workers_up(settings, 4), "host A's agent worker")
            killed = time.time()
            _kill_tree(host_b)
            _wait(d.started.exists, "the task running again on host A")
            agent = float(d.started.read_text())
            _wait(lambda: store.task_state(1).value == "done", "the task merged")
            first, second = sorted(store.task_detail(1)["runs"], key=lambda r: r["attempt"])
            merged = _git(d.hub, "log", "--format=%s", "cw/integration")
            assert "first step on host-b" in merged, "the dead agent's commit was merged"
        finally:
            store.close()
    finally:
        d.stop()
    assert (first["host"], first["state"], second["host"]) == ("host-b", "lost", "host-a")
    return {
        "lease_expiry": round(first["finished_at"] - killed, 2),
        "dispatch": round(second["started_at"] - first["finished_at"], 2),
        "worktree_from_hub": round(agent - second["started_at"], 2),
        "recovery": round(agent - killed, 2),
    }


def _workers_up(settings: Settings, count: int) -> bool:
    return len(make_app(settings).control.ping(timeout=0.5)) >= count


def main(runs: int) -> None:
    with tempfile.TemporaryDirectory(prefix="cw-bench-hosts-") as tmp:
        server = subprocess.Popen(
            [
                "redis-server",
                "--port",
                "0",
                "--unixsocket",
                f"{tmp}/redis.sock",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            start_new_session=True,
        )
        url = f"redis+socket://{tmp}/redis.sock"
        try:
            client = redis.Redis(unix_socket_path=f"{tmp}/redis.sock")
            _wait(lambda: _pings(client), "redis-server")
            results = []
            for n in range(runs):
                client.flushall()
                top = Path(tmp) / f"run-{n}"
                top.mkdir()
                results.append(_one_run(top, url))
                print(json.dumps({"run": n + 1, **results[-1]}), file=sys.stderr, flush=True)
        finally:
            server.terminate()
            server.wait()
    medians = {k: round(statistics.median(r[k] for r in results), 2) for k in results[0]}
    print(json.dumps({"runs": results, "median": medians, "lease_seconds": 30.0}, indent=2))


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 5)
