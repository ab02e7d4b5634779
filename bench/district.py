"""What the benchmarks share: a ``cw init``-ed repository, its workers, a plan run to the end.

Each district starts its own embedded Redis (``cw init``; a unix socket under ``.cw``), never
a shared server; ``workers`` stops it again.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import psutil
import yaml

TOP = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TOP))

from cw.settings import Settings  # noqa: E402
from cw.store import Store  # noqa: E402
from cw.transport.celeryapp import make_app  # noqa: E402

CW = [sys.executable, "-m", "cw"]
GIT_ID = {
    "GIT_AUTHOR_NAME": "bench",
    "GIT_AUTHOR_EMAIL": "b@localhost",
    "GIT_COMMITTER_NAME": "bench",
    "GIT_COMMITTER_EMAIL": "b@localhost",
}
ENV = {k: v for k, v in os.environ.items() if not k.startswith("CW_")} | GIT_ID
# The command agent: writes one file named after its task, then sleeps the task's duration.
AGENT = """\
mkdir -p out
echo "$CW_TASK_KEY" > "out/$CW_TASK_KEY"
seconds=$(grep "^$CW_TASK_KEY " "$BENCH_DURATIONS" | cut -d' ' -f2)
[ "$seconds" = 0 ] || sleep "$seconds"
"""

Task = dict[str, object]


def sh(cwd: Path, *argv: str, env: dict[str, str] | None = None) -> str:
    out = subprocess.run(argv, cwd=cwd, env=env or ENV, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed:\n{out.stderr}")
    return out.stdout


def settings_of(repo: Path) -> Settings:
    return Settings.load(env={"CW_REPO": str(repo)})


def make_district(root: Path, name: str, durations: dict[str, float]) -> Path:
    """A repository with one commit, ``cw init``-ed, whose agent is :data:`AGENT`."""
    repo = root / name
    repo.mkdir(parents=True)
    sh(repo, "git", "init", "-q", "-b", "main")
    (repo / "README.md").write_text("bench\n")
    sh(repo, "git", "add", "-A")
    sh(repo, "git", "commit", "-q", "-m", "first")
    sh(repo, *CW, "init")
    (repo.parent / f"{name}.sh").write_text(AGENT)
    (repo.parent / f"{name}.durations").write_text(
        "".join(f"{k} {v}\n" for k, v in durations.items())
    )
    with open(repo / ".cw" / "config.toml", "a") as config:
        config.write(f'agent_command = "sh {repo.parent / f"{name}.sh"}"\n')
    return repo


def agent_env(repo: Path) -> dict[str, str]:
    return ENV | {"BENCH_DURATIONS": str(repo.parent / f"{repo.name}.durations")}


@contextmanager
def workers(repo: Path, agent_workers: Sequence[int]) -> Iterator[list[subprocess.Popen[bytes]]]:
    """One ``cw worker -c N`` per entry and one merge worker; the broker stopped after."""
    env = agent_env(repo)
    argvs = [["-c", str(c)] for c in agent_workers] + [["--merge"]]
    procs = [
        subprocess.Popen(
            [*CW, "worker", *argv, "--loglevel", "WARNING"],
            cwd=repo,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for argv in argvs
    ]
    try:
        await_workers(repo, len(procs))
        yield procs
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(30)
        sh(repo, *CW, "broker", "stop")


def tree_cpu(procs: Sequence[subprocess.Popen[bytes]]) -> float:
    """CPU seconds so far of ``procs`` and every process below them, with the children they
    have reaped (the git and agent processes a pool process waited for)."""
    total = 0.0
    for root in procs:
        try:
            top = psutil.Process(root.pid)
            tree = [top, *top.children(recursive=True)]
        except psutil.Error:
            continue
        for proc in tree:
            try:
                times = proc.cpu_times()
            except psutil.Error:
                continue
            total += times.user + times.system + times.children_user + times.children_system
    return total


def await_workers(repo: Path, count: int) -> None:
    app = make_app(settings_of(repo))
    deadline = time.monotonic() + 60
    while len(app.control.ping(timeout=0.5) or []) < count:
        if time.monotonic() > deadline:
            raise SystemExit("workers did not start")


def run_plan(repo: Path, tasks: list[Task], name: str) -> tuple[float, float]:
    """(seconds from the stored submission to the last merge, wall seconds around the CLI)."""
    (repo / "plan.yaml").write_text(yaml.safe_dump({"initiative": name, "tasks": tasks}))
    start = time.monotonic()
    sh(repo, *CW, "submit", "plan", "plan.yaml")
    sh(repo, *CW, "wait", "--interval", "0.05", "--timeout", "1200")
    wall = time.monotonic() - start
    return stored_span(repo, name), wall


def stored_span(repo: Path, initiative: str) -> float:
    """From the submission's commit to the last task's `done` event, per the database."""
    store = Store.open(settings_of(repo).db_url)
    keys = {str(t["id"]) for t in store.task_rows() if t["initiative"] == initiative}
    events = [e for e in store.events() if str(e["task_id"]) in keys]
    submitted = next(
        e["at"]
        for e in store.events()
        if e["kind"] == "initiative.submitted" and e["data"].get("note") == initiative
    )
    store.close()
    return float(max(e["at"] for e in events if e["kind"] == "task.done") - submitted)


def lower_bound(tasks: list[Task], durations: dict[str, float], slots: int) -> float:
    """max(critical path, work / slots): no scheduler with ``slots`` agents does better."""
    finish: dict[str, float] = {}
    for t in tasks:  # listed after what they wait for
        deps = t.get("depends_on") or []
        assert isinstance(deps, list)
        finish[str(t["id"])] = durations[str(t["id"])] + max((finish[d] for d in deps), default=0)
    return max(max(finish.values()), sum(durations.values()) / slots)


def interleaved(commands: dict[str, Callable[[], object]], repeat: int) -> dict[str, float]:
    """Median seconds of each command, the commands taking turns ``repeat`` times."""
    samples: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(repeat):
        for name, fn in commands.items():
            start = time.monotonic()
            fn()
            samples[name].append(time.monotonic() - start)
    return {name: statistics.median(s) for name, s in samples.items()}


def percentile(values: Sequence[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[int(share * (len(ordered) - 1))]
