"""Benchmarks for docs/benchmarks.md, measured side by side in one run.

    make bench                 # all of them (about 5 minutes on 2 cores)
    .venv/bin/python bench/run.py makespan overhead submit resubmit queries

Prints a Markdown report; raw numbers go to build/bench.json.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import yaml

TOP = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TOP))

from bench import rawcelery  # noqa: E402
from bench.fsui import bench_fsui  # noqa: E402
from bench.merge import bench_merge  # noqa: E402
from bench.resubmit import bench_resubmit  # noqa: E402
from cw.settings import Settings  # noqa: E402
from cw.store import AttemptResult, MergeReport, Store  # noqa: E402
from cw.transport.celeryapp import make_app  # noqa: E402

CW = [sys.executable, "-m", "cw"]
GIT_ID = {
    "GIT_AUTHOR_NAME": "bench",
    "GIT_AUTHOR_EMAIL": "b@localhost",
    "GIT_COMMITTER_NAME": "bench",
    "GIT_COMMITTER_EMAIL": "b@localhost",
}
ENV = {k: v for k, v in os.environ.items() if not k.startswith("CW_")} | GIT_ID
AGENT = """\
mkdir -p out
echo "$CW_TASK_KEY" > "out/$CW_TASK_KEY"
seconds=$(grep "^$CW_TASK_KEY " "$BENCH_DURATIONS" | cut -d' ' -f2)
[ "$seconds" = 0 ] || sleep "$seconds"
"""


def sh(cwd: Path, *argv: str, env: dict[str, str] | None = None) -> str:
    out = subprocess.run(argv, cwd=cwd, env=env or ENV, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed:\n{out.stderr}")
    return out.stdout


def make_district(root: Path, name: str, durations: dict[str, float]) -> Path:
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


@contextmanager
def workers(repo: Path, agent_workers: list[int]) -> Iterator[None]:
    env = ENV | {"BENCH_DURATIONS": str(repo.parent / f"{repo.name}.durations")}
    procs = [
        subprocess.Popen(
            [*CW, "worker", "-c", str(c), "--loglevel", "WARNING"],
            cwd=repo,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for c in agent_workers
    ] + [
        subprocess.Popen(
            [*CW, "worker", "--merge", "--loglevel", "WARNING"],
            cwd=repo,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    ]
    try:
        _await_workers(repo, len(procs))
        yield
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(30)
        sh(repo, *CW, "broker", "stop")


def _await_workers(repo: Path, count: int) -> None:
    app = make_app(Settings.load(env={"CW_REPO": str(repo)}))
    deadline = time.monotonic() + 60
    while len(app.control.ping(timeout=0.5) or []) < count:
        if time.monotonic() > deadline:
            raise SystemExit("workers did not start")


def run_plan(repo: Path, tasks: list[dict[str, object]], name: str) -> tuple[float, float]:
    """(seconds from the stored submission to the last merge, wall seconds around the CLI)."""
    (repo / "plan.yaml").write_text(yaml.safe_dump({"initiative": name, "tasks": tasks}))
    start = time.monotonic()
    sh(repo, *CW, "submit", "plan", "plan.yaml")
    sh(repo, *CW, "wait", "--interval", "0.05", "--timeout", "600")
    wall = time.monotonic() - start
    return _stored_span(repo, name), wall


def _stored_span(repo: Path, initiative: str) -> float:
    """From the submission's commit to the last task's `done` event, per the database."""
    store = Store.open(Settings.load(env={"CW_REPO": str(repo)}).db_url)
    keys = {str(t["id"]) for t in store.task_rows() if t["initiative"] == initiative}
    events = [e for e in store.events() if str(e["task_id"]) in keys]
    submitted = next(
        e["at"]
        for e in store.events()
        if e["kind"] == "initiative.submitted" and e["data"].get("note") == initiative
    )
    store.close()
    return max(e["at"] for e in events if e["kind"] == "task.done") - submitted


# -- makespan ---------------------------------------------------------------------------------


def random_dag(seed: int, n: int = 30) -> tuple[list[dict[str, object]], dict[str, float]]:
    rng = random.Random(seed)
    tasks, durations = [], {}
    for i in range(n):
        key = f"t{i:02d}"
        deps = sorted({f"t{j:02d}" for j in rng.sample(range(i), min(i, rng.randint(0, 2)))})
        durations[key] = round(rng.uniform(1.0, 4.0), 2)
        tasks.append({"id": key, "prompt": "sleep", "depends_on": deps})
    return tasks, durations


def lower_bound(tasks: list[dict[str, object]], durations: dict[str, float], slots: int) -> float:
    finish: dict[str, float] = {}
    for t in tasks:  # topological by construction
        deps = t["depends_on"]
        assert isinstance(deps, list)
        finish[str(t["id"])] = durations[str(t["id"])] + max((finish[d] for d in deps), default=0)
    return max(max(finish.values()), sum(durations.values()) / slots)


def bench_makespan(root: Path, runs: int = 3) -> dict[str, object]:
    ratios, walls, rows = [], [], []
    for seed in range(runs):
        tasks, durations = random_dag(seed)
        repo = make_district(root, f"makespan{seed}", durations)
        with workers(repo, [2, 2]):
            measured, wall = run_plan(repo, tasks, f"makespan-{seed}")
        bound = lower_bound(tasks, durations, 4)
        ratios.append(measured / bound)
        walls.append(wall / bound)
        rows.append(
            {
                "seed": seed,
                "makespan_s": round(measured, 2),
                "wall_s": round(wall, 2),
                "bound_s": round(bound, 2),
                "ratio": round(measured / bound, 3),
                "wall_ratio": round(wall / bound, 3),
            }
        )
    return {
        "runs": rows,
        "median_ratio": round(statistics.median(ratios), 3),
        "median_wall_ratio": round(statistics.median(walls), 3),
    }


# -- overhead per task ------------------------------------------------------------------------


def bench_overhead(root: Path, n: int = 30) -> dict[str, object]:
    chain = [
        {"id": f"s{i:02d}", "prompt": "x", "depends_on": [f"s{i - 1:02d}"] if i else []}
        for i in range(n)
    ]
    wide = [{"id": f"w{i:02d}", "prompt": "x"} for i in range(n)]
    durations = {str(t["id"]): 0.0 for t in chain + wide}
    repo = make_district(root, "overhead", durations)
    settings = Settings.load(env={"CW_REPO": str(repo)})
    with workers(repo, [2]):
        serial, serial_wall = run_plan(repo, chain, "serial")
        parallel, parallel_wall = run_plan(repo, wide, "parallel")
        url = make_app(settings).conf.broker_url
        raw_serial, raw_parallel = rawcelery.measure(url, n)
    return {
        "tasks": n,
        "cw_serial_ms_per_task": round(1000 * serial / n, 1),
        "cw_parallel_ms_per_task": round(1000 * parallel / n, 1),
        "cw_serial_wall_ms_per_task": round(1000 * serial_wall / n, 1),
        "cw_parallel_wall_ms_per_task": round(1000 * parallel_wall / n, 1),
        "raw_chain_serial_ms": round(1000 * raw_serial / n, 1),
        "raw_chain_parallel_ms": round(1000 * raw_parallel / n, 1),
    }


# -- agent start overhead --------------------------------------------------------------------


def bench_agent_start(root: Path, n: int = 20) -> dict[str, object]:
    """Claim -> agent process running, and agent exit -> merge queued, per task (event times).

    A chain, so each task is claimed when a worker is free: no queue wait is counted.
    """
    chain = [
        {"id": f"a{i:02d}", "prompt": "x", "depends_on": [f"a{i - 1:02d}"] if i else []}
        for i in range(n)
    ]
    repo = make_district(root, "agentstart", {str(t["id"]): 0.0 for t in chain})
    with workers(repo, [2]):
        run_plan(repo, chain, "agentstart")
    store = Store.open(Settings.load(env={"CW_REPO": str(repo)}).db_url)
    times: dict[int, dict[str, float]] = {}
    for e in store.events():
        if e["task_id"] is not None:
            times.setdefault(e["task_id"], {})[e["kind"]] = e["at"]
    store.close()
    start = [1000 * (t["agent.started"] - t["task.queued"]) for t in times.values()]
    finish = [1000 * (t["task.merging"] - t["agent.exited"]) for t in times.values()]
    return {
        "tasks": n,
        "claim_to_agent_running_ms": round(statistics.median(start), 1),
        "claim_to_agent_running_p90_ms": round(sorted(start)[int(0.9 * len(start))], 1),
        "agent_exit_to_merge_queued_ms": round(statistics.median(finish), 1),
        "agent_exit_to_merge_queued_p90_ms": round(sorted(finish)[int(0.9 * len(finish))], 1),
    }


# -- submit and queries -----------------------------------------------------------------------


def big_plan(n: int, seed: int = 7) -> list[dict[str, object]]:
    rng = random.Random(seed)
    tasks = []
    for i in range(n):
        deps = sorted({f"k{j}" for j in rng.sample(range(max(0, i - 50), i), min(i, 2))})
        tasks.append({"id": f"k{i}", "prompt": f"task {i}", "depends_on": deps})
    return tasks


def timed(fn: Callable[[], object], repeat: int) -> float:
    samples = []
    for _ in range(repeat):
        start = time.monotonic()
        fn()
        samples.append(time.monotonic() - start)
    return statistics.median(samples)


def bench_submit(root: Path) -> dict[str, object]:
    repo = make_district(root, "submit", {})
    (repo / "plan.yaml").write_text(yaml.safe_dump({"initiative": "big", "tasks": big_plan(5000)}))
    seconds = []
    for i in range(3):
        text = (repo / "plan.yaml").read_text().replace("initiative: big", f"initiative: big{i}")
        (repo / f"plan{i}.yaml").write_text(text)
        start = time.monotonic()
        sh(repo, *CW, "submit", "plan", f"plan{i}.yaml")
        seconds.append(time.monotonic() - start)
    sh(repo, *CW, "broker", "stop")
    text = (repo / "plan0.yaml").read_text()
    parse = timed(lambda: yaml.load(text, Loader=yaml.CSafeLoader), 3)  # the baseline
    median = statistics.median(seconds)
    return {
        "tasks": 5000,
        "median_s": round(median, 2),
        "runs_s": [round(s, 2) for s in seconds],
        "c_yaml_parse_s": round(parse, 3),
        "ratio_to_c_yaml": round(median / parse, 2),
    }


def bench_queries(root: Path, n: int = 10_000) -> dict[str, object]:
    repo = make_district(root, "queries", {})
    settings = Settings.load(env={"CW_REPO": str(repo)})
    _fill(Store.open(settings.db_url), n)
    results = {"tasks": n}
    for label, argv in (
        ("version", ["--version"]),
        ("status_json", ["status", "--json"]),
        ("agent_list_json", ["agent", "list", "--json"]),
    ):
        results[f"{label}_s"] = round(timed(lambda a=argv: sh(repo, *CW, *a), 5), 3)
    return results


def _fill(store: Store, n: int) -> None:
    """n tasks in a DAG, a third of them done, a third running, with agents and runs."""
    from tests.factories import spec

    store.submit(spec({f"q{i}": [f"q{i - 1}"] if i % 3 else [] for i in range(n)}, name="q"))
    claims = store.claim_ready_tasks()
    while claims:
        for claim in claims:
            store.start_attempt(claim, worker="bench", host="h", lease_seconds=3600)
            if claim.task_id % 2:
                continue
            store.finish_attempt(claim, AttemptResult(outcome="done"), "command")
            store.begin_merge(claim)
            store.finish_merge(claim, MergeReport(sha="0" * 40))
        claims = store.claim_ready_tasks()


BENCHES = {
    "makespan": bench_makespan,
    "overhead": bench_overhead,
    "agent_start": bench_agent_start,
    "merge": bench_merge,
    "submit": bench_submit,
    "resubmit": bench_resubmit,
    "queries": bench_queries,
    "fsui": bench_fsui,
}


def main(names: list[str]) -> None:
    root = Path(tempfile.mkdtemp(prefix="cwb-"))
    results = {}
    try:
        for name in names or list(BENCHES):
            print(f"== {name}", file=sys.stderr, flush=True)
            results[name] = BENCHES[name](root)
            print(json.dumps(results[name], indent=2), file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    out = TOP / "build" / "bench.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main(sys.argv[1:])
