"""The CLI's own costs: ``cw submit plan``, the listing commands, ``cw --version``.

- submit: ``cw submit plan`` of a YAML plan of N tasks (about 2N edges) into a fresh
  district, against PyYAML's C loader parsing the same file in this process.
- listings: ``cw status --json``, ``cw agent list --json``, ``cw task list --json`` on a
  district of N tasks (20 plans, chains of five) of which M were claimed (M agents): half of
  those merged, half running. Each against ``cw --version``, the commands taking turns.
- start-up: ``cw --version`` against ``python -c pass`` in the same interpreter.
"""

from __future__ import annotations

import random
import statistics
import sys
import time
from functools import partial
from pathlib import Path

import yaml

from bench.district import CW, interleaved, make_district, settings_of, sh
from bench.fsui import big_spec
from bench.table import Row, Sizes
from cw.store import AttemptResult, MergeReport, Store


def big_plan(n: int, seed: int = 7) -> list[dict[str, object]]:
    rng = random.Random(seed)
    tasks: list[dict[str, object]] = []
    for i in range(n):
        deps = sorted({f"k{j}" for j in rng.sample(range(max(0, i - 50), i), min(i, 2))})
        tasks.append({"id": f"k{i}", "prompt": f"task {i}", "depends_on": deps})
    return tasks


def bench_submit(root: Path, n: int, runs: int) -> dict[str, object]:
    repo = make_district(root, "submit", {})
    text = yaml.safe_dump({"initiative": "big", "tasks": big_plan(n)})
    seconds = []
    for i in range(runs):
        (repo / f"plan{i}.yaml").write_text(text.replace("initiative: big", f"initiative: big{i}"))
        start = time.monotonic()
        sh(repo, *CW, "submit", "plan", f"plan{i}.yaml")
        seconds.append(time.monotonic() - start)
    sh(repo, *CW, "broker", "stop")
    parse = []
    for _ in range(3):
        start = time.monotonic()
        yaml.load((repo / "plan0.yaml").read_text(), Loader=yaml.CSafeLoader)
        parse.append(time.monotonic() - start)
    return {
        "tasks": n,
        "median_s": round(statistics.median(seconds), 3),
        "runs_s": [round(s, 3) for s in seconds],
        "c_yaml_parse_s": round(statistics.median(parse), 3),
    }


def row_submit(root: Path, sizes: Sizes) -> list[Row]:
    r = bench_submit(root, sizes.submit_tasks, sizes.submit_runs)
    cw, parse = float(str(r["median_s"])), float(str(r["c_yaml_parse_s"]))
    return [
        Row(
            f"`cw submit plan`, {sizes.submit_tasks:,} tasks",
            f"{cw:.2f} s",
            f"PyYAML CSafeLoader parse of the same file: {parse:.3f} s",
            cw / parse,
            "≤ 2x",
            cw / parse <= 2,
            r,
        )
    ]


def fill(store: Store, tasks: int, agents: int) -> None:
    """``tasks`` tasks; ``agents`` of them claimed and started, every other one merged."""
    store.submit(big_spec(tasks, 20))
    for i, claim in enumerate(store.claim_ready_tasks(limit=agents)):
        store.start_attempt(claim, worker="bench", host="h", lease_seconds=3600)
        if i % 2:
            continue
        store.finish_attempt(claim, AttemptResult(outcome="done"), "command")
        store.begin_merge(claim)
        store.finish_merge(claim, MergeReport(sha="0" * 40))


LISTINGS = {
    "cw status --json": ["status", "--json"],
    "cw agent list --json": ["agent", "list", "--json"],
    "cw task list --json": ["task", "list", "--json"],
}


def row_listings(root: Path, sizes: Sizes) -> list[Row]:
    repo = make_district(root, "listings", {})
    store = Store.open(settings_of(repo).db_url)
    fill(store, sizes.listed_tasks, sizes.listed_agents)
    store.close()
    argvs = {"cw --version": ["--version"], **LISTINGS}
    times = interleaved(
        {name: partial(sh, repo, *CW, *argv) for name, argv in argvs.items()},
        sizes.command_runs,
    )
    sh(repo, *CW, "broker", "stop")
    version = times["cw --version"]
    size = f"{sizes.listed_tasks:,} tasks / {sizes.listed_agents:,} agents"
    return [
        Row(
            f"`{name}`, {size}",
            f"{times[name]:.3f} s",
            f"`cw --version`: {version:.3f} s",
            times[name] / version,
            "≤ 3x",
            times[name] / version <= 3,
            {"median_s": round(times[name], 3), "version_s": round(version, 3)},
        )
        for name in LISTINGS
    ]


def row_startup(root: Path, sizes: Sizes) -> list[Row]:
    times = interleaved(
        {
            "version": lambda: sh(root, *CW, "--version"),
            "pass": lambda: sh(root, sys.executable, "-c", "pass"),
        },
        2 * sizes.command_runs,
    )
    ratio = times["version"] / times["pass"]
    return [
        Row(
            "`cw --version`",
            f"{times['version']:.3f} s",
            f"`python -c pass`: {times['pass']:.3f} s",
            ratio,
            "≤ 1.8x",
            ratio <= 1.8,
            {"version_s": round(times["version"], 3), "python_s": round(times["pass"], 3)},
        )
    ]
