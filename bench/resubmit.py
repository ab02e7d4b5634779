"""Re-submitting a grown GSD ``.planning/`` directory (cw/plans/diff.py), printed as JSON.

    .venv/bin/python bench/run.py resubmit

A district holds a 5,000-task GSD corpus (50 phases of 20 plans of 5 tasks, submitted once).
Measured side by side, the median of three runs each:

- ``one_plan_added``: ``cw submit plan .planning`` after one new plan file was written (a new
  phase each run).
- ``unchanged``: the same command again right after, nothing changed ("nothing new"): answered
  from the receipt the submit before kept (cw/plans/receipt.py).
- ``unchanged_full``: "nothing new" the long way: the command after the district changed
  without a receipt (a plan stored by this process, as another submit would), so it reads
  the plans and the database.

Each is the whole command (``wall_s``); the last two also, in this process, its two parts:
reading the directory (``read_s``) and reconciling it with the database (``reconcile_s``:
reading what the district holds, comparing, and the submit's one transaction when something
is new).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

TOP = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TOP))

from cw.plans.diff import Held, compare  # noqa: E402
from cw.plans.load import load_plan  # noqa: E402
from cw.settings import Settings  # noqa: E402
from cw.store import Store  # noqa: E402

CW = [sys.executable, "-m", "cw"]
PHASES, PLANS, TASKS = 50, 20, 5
RUNS = 3
SUBMIT = ("submit", "plan", ".planning", "--no-dispatch")
ENV = {k: v for k, v in os.environ.items() if not k.startswith("CW_")} | {
    "GIT_AUTHOR_NAME": "bench",
    "GIT_AUTHOR_EMAIL": "b@localhost",
    "GIT_COMMITTER_NAME": "bench",
    "GIT_COMMITTER_EMAIL": "b@localhost",
}


def plan_text(phase: int, number: int) -> str:
    tasks = "".join(
        f'<task type="auto"><name>Task {t}</name><action>Do step {t} of plan '
        f"{phase:02d}-{number:02d}.</action><done>step {t} done</done></task>\n"
        for t in range(1, TASKS + 1)
    )
    return f"---\nphase: {phase:02d}\nplan: {number:02d}\n---\n<tasks>\n{tasks}</tasks>\n"


def write_plan(repo: Path, phase: int, number: int) -> None:
    folder = repo / ".planning" / "phases" / f"{phase:02d}-p{phase}"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{phase:02d}-{number:02d}-PLAN.md").write_text(plan_text(phase, number))


def cw(repo: Path, *args: str) -> float:
    start = time.monotonic()
    out = subprocess.run([*CW, *args], cwd=repo, env=ENV, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"cw {' '.join(args)} failed:\n{out.stderr}")
    return time.monotonic() - start


def in_process(store: Store, repo: Path) -> tuple[float, float]:
    """What the command does, timed in two parts: reading the plan files; reading what the
    district holds, comparing, and (when something is new) the submit's transaction."""
    start = time.monotonic()
    held = Held(store.held)
    held.get("repo")
    reconcile = time.monotonic() - start
    start = time.monotonic()
    spec = load_plan(repo / ".planning", known=held.known)
    read = time.monotonic() - start
    start = time.monotonic()
    if not compare(spec, held.get(spec.name)).nothing_new:
        store.submit(spec, held.get(spec.name))
    return read, reconcile + time.monotonic() - start


def bench_resubmit(root: Path) -> dict[str, object]:
    repo = root / "resubmit"
    repo.mkdir(parents=True)
    for argv in (
        ["git", "init", "-q", "-b", "main"],
        ["git", "commit", "-q", "--allow-empty", "-m", "first"],
        [*CW, "init"],
    ):
        subprocess.run(argv, cwd=repo, env=ENV, check=True, capture_output=True)
    for phase in range(1, PHASES + 1):
        for number in range(1, PLANS + 1):
            write_plan(repo, phase, number)
    first = cw(repo, *SUBMIT)
    store = Store.open(Settings.load(env={"CW_REPO": str(repo)}).db_url)
    results: dict[str, object] = {
        "tasks": PHASES * PLANS * TASKS,
        "first_submit_s": round(first, 2),
    }
    samples: dict[str, list[tuple[float, ...]]] = {
        "one_plan_added": [],
        "unchanged": [],
        "unchanged_full": [],
    }
    for run in range(RUNS):
        write_plan(repo, PHASES + 1 + 2 * run, 1)
        samples["one_plan_added"].append((cw(repo, *SUBMIT),))
        samples["unchanged"].append((cw(repo, *SUBMIT),))
        write_plan(repo, PHASES + 2 + 2 * run, 1)
        one_plan_added = in_process(store, repo)  # stored here: no receipt for the next command
        wall = cw(repo, *SUBMIT)
        samples["unchanged_full"].append((wall, *in_process(store, repo)))
        samples["one_plan_added"][-1] += one_plan_added
    store.close()
    for name, runs in samples.items():
        results[name] = {
            label: round(statistics.median(run[i] for run in runs), 3)
            for i, label in enumerate(("wall_s", "read_s", "reconcile_s")[: len(runs[0])])
        }
    return results
