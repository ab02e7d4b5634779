"""Merge throughput: the merge worker against a plain loop of ``git merge``, same branches.

    .venv/bin/python bench/merge.py        # prints the JSON result (about a minute on 2 cores)

``make bench`` runs it on 200 branches (``row_merge``), ``--quick`` on 40.

Each run makes a fresh ``cw init``-ed repository (100 small source files and a shared
registry file) and prepares N task branches from the integration branch's commit: each adds
its own file, and every fourth also edits its own slot of the shared file, so merges are
real three-way merges. A plan of N independent tasks goes to the agent workers with **no
merge worker running**; each agent fast-forwards its task branch to its prepared commit, so
the branches cw merges are exactly the prepared ones. When all N tasks wait in ``merging``,
the agent workers are stopped and the two sides are timed, in alternating order per run:

- **cw**: ``cw worker --merge`` drains the N merge jobs. Timed by the database's own clock,
  from the first merge's ``started_at`` (``store.begin_merge``) to the last ``task.done``
  event. So it counts, per merge, the Celery hand-off, the merge train of
  ``cw.git.train`` (``merge-tree`` + the merge commit, the nothing-dropped check where both
  sides changed a file, one compare-and-set of the branch per train; no verify command is
  configured, so no checkout),
  the database writes and ``dispatch_ready``; it excludes the worker's start-up. Worktree
  removal runs in the merge worker's background thread once merges pause, so it is not timed.
- **plain**: a detached worktree of the same repository at the same base commit, then
  ``git merge --no-ff --no-edit <branch>`` for the same branches in the same order (the
  order the merge queue holds them), timed with ``time.monotonic()``.

Both end at the same tree, which is checked. Reported: per-run seconds, medians, ms per
merge, and the ratio of the medians (cw / plain).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

import yaml

TOP = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TOP))

from bench.table import Row, Sizes  # noqa: E402
from cw.settings import Settings  # noqa: E402
from cw.store import Store  # noqa: E402
from cw.store.read.listings import TaskListing  # noqa: E402

_CW = [sys.executable, "-m", "cw"]
_ENV = {k: v for k, v in os.environ.items() if not k.startswith("CW_")} | {
    "GIT_AUTHOR_NAME": "bench",
    "GIT_AUTHOR_EMAIL": "b@localhost",
    "GIT_COMMITTER_NAME": "bench",
    "GIT_COMMITTER_EMAIL": "b@localhost",
}
_PREP = "bench/prep/"  # prepared branches: refs/heads/bench/prep/<task key>
# The agent: move the task branch to its prepared commit (TOML literal string).
_AGENT = f"agent_command = 'git merge --ff-only --quiet \"{_PREP}$CW_TASK_KEY\"'\n"
_SLOT_LINES = 5  # lines per slot of the shared file: edits stay far enough apart to merge
_WAIT_SECONDS = 300.0


def _sh(cwd: Path, *argv: str) -> str:
    out = subprocess.run(argv, cwd=cwd, env=_ENV, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed:\n{out.stderr}")
    return out.stdout.strip()


# -- the repository and its branches ------------------------------------------------------


def registry(n: int, changed: dict[int, str]) -> str:
    """The shared registry: one slot per task, ``changed`` slots carry a value."""
    blank = [""] * (_SLOT_LINES - 2)
    return "".join(
        "\n".join([f"## slot {i}", f"value = {changed.get(i, 'none')}", *blank]) + "\n"
        for i in range(n)
    )


def _make_repo(repo: Path, n: int) -> str:
    """A ``cw init``-ed repository; return the integration branch's sha."""
    repo.mkdir(parents=True)
    _sh(repo, "git", "init", "-q", "-b", "main")
    for d in range(10):
        (repo / "src" / f"pkg{d}").mkdir(parents=True)
        for m in range(10):
            body = "".join(
                f"def f{k}() -> int:\n    return {d * 100 + m * 10 + k}\n" for k in range(8)
            )
            (repo / "src" / f"pkg{d}" / f"mod{m}.py").write_text(body)
    (repo / "shared").mkdir()
    (repo / "shared" / "registry.txt").write_text(registry(n, {}))
    _sh(repo, "git", "add", "-A")
    _sh(repo, "git", "commit", "-q", "-m", "first")
    _sh(repo, *_CW, "init")
    with open(repo / ".cw" / "config.toml", "a") as config:
        config.write(_AGENT)
    return _sh(repo, "git", "rev-parse", "cw/integration")


def _prepare_branches(repo: Path, base: str, keys: list[str]) -> None:
    """One branch per key from ``base``: its own file; every fourth edits the shared file."""
    scratch = repo.parent / f"{repo.name}-prep"
    _sh(repo, "git", "worktree", "add", "-q", "--detach", str(scratch), base)
    for i, key in enumerate(keys):
        _sh(scratch, "git", "checkout", "-q", "-B", _PREP + key, base)
        (scratch / "tasks").mkdir(exist_ok=True)
        lines = "".join(f"STEP_{j} = {i * 10 + j}\n" for j in range(5))
        (scratch / "tasks" / f"{key}.py").write_text(f'"""Task {key}."""\n\n{lines}')
        if i % 4 == 0:
            (scratch / "shared" / "registry.txt").write_text(registry(len(keys), {i: key}))
        _sh(scratch, "git", "add", "-A")
        _sh(scratch, "git", "commit", "-q", "-m", f"task {key}")
    _sh(repo, "git", "worktree", "remove", "--force", str(scratch))


# -- cw: agents fill the merge queue, then the merge worker drains it ----------------------


@contextmanager
def _worker(repo: Path, log: Path, *args: str) -> Iterator[None]:
    with open(log, "a") as out:
        proc = subprocess.Popen(
            [*_CW, "worker", *args, "--loglevel", "WARNING"],
            cwd=repo,
            env=_ENV,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            yield
        finally:
            proc.terminate()
            proc.wait(30)


def _wait_all(store: Store, initiative: str, state: str) -> list[TaskListing]:
    """Poll until every task of ``initiative`` is in ``state``; fail on a dead end."""
    deadline = time.monotonic() + _WAIT_SECONDS
    while True:
        rows = [r for r in store.task_rows() if r["initiative"] == initiative]
        states = {str(r["state"]) for r in rows}
        if states == {state}:
            return rows
        stuck = states & {"failed", "conflict", "blocked", "cancelled", "stopped"}
        if stuck or time.monotonic() > deadline:
            errors = sorted({str(r["last_error"]) for r in rows if r["last_error"]})
            raise SystemExit(f"{initiative}: tasks {sorted(states)} waiting for {state}: {errors}")
        time.sleep(0.2)


def _fill_merge_queue(repo: Path, store: Store, keys: list[str], log: Path) -> list[str]:
    """Run the N agents with no merge worker; return the task branches in queue order."""
    tasks = [{"id": key, "prompt": f"task {key}"} for key in keys]
    (repo / "plan.yaml").write_text(yaml.safe_dump({"initiative": repo.name, "tasks": tasks}))
    with _worker(repo, log, "-c", "2"):
        _sh(repo, *_CW, "submit", "plan", "plan.yaml")
        _wait_all(store, repo.name, "merging")
    branch = {r["id"]: str(r["branch"]) for r in store.workspaces()}
    queued = [e["task_id"] for e in store.events() if e["kind"] == "task.merging"]
    return [branch[task_id] for task_id in queued]


class Drain(NamedTuple):
    """The merge worker's drain, per the database's timestamps (seconds)."""

    seconds: float  # first merge's start -> last task.done
    in_merge: float  # median begin_merge -> finish_merge
    between: float  # median finish_merge -> next begin_merge: dispatch, clean-up, Celery


def _drain(repo: Path, store: Store, log: Path) -> Drain:
    """Start the merge worker, let it merge everything queued, stop it."""
    with _worker(repo, log, "--merge"):
        _wait_all(store, repo.name, "done")
    merges = sorted(store.merge_rows(), key=lambda m: float(m["started_at"]))
    starts = [float(m["started_at"]) for m in merges]
    ends = [float(m["finished_at"]) for m in merges]
    last = max(float(e["at"]) for e in store.events() if e["kind"] == "task.done")
    return Drain(
        seconds=last - starts[0],
        in_merge=statistics.median(e - s for s, e in zip(starts, ends, strict=True)),
        between=statistics.median(s - e for e, s in zip(ends, starts[1:], strict=False)),
    )


# -- the baseline --------------------------------------------------------------------------


def _plain_loop(repo: Path, base: str, branches: list[str]) -> tuple[float, str]:
    """Seconds for ``git merge`` of each branch in a worktree at ``base``; the final tree."""
    plain = repo.parent / f"{repo.name}-plain"
    _sh(repo, "git", "worktree", "add", "-q", "--detach", str(plain), base)
    start = time.monotonic()
    for branch in branches:
        _sh(plain, "git", "merge", "--no-ff", "--no-edit", "--quiet", branch)
    seconds = time.monotonic() - start
    tree = _sh(plain, "git", "rev-parse", "HEAD^{tree}")
    _sh(repo, "git", "worktree", "remove", "--force", str(plain))
    return seconds, tree


# -- one run, all runs -----------------------------------------------------------------------


class Run(NamedTuple):
    """Both sides of one run, on the same repository and branches."""

    cw: Drain
    plain: float  # seconds of the plain loop


def _one_run(root: Path, run: int, n: int) -> Run:
    """Both sides on a fresh repository; cw goes first in even runs, plain in odd ones."""
    repo = root / f"merge{run}"
    base = _make_repo(repo, n)
    keys = [f"m{i:02d}" for i in range(n)]
    _prepare_branches(repo, base, keys)
    log = root / f"merge{run}.log"
    store = Store.open(Settings.load(env={"CW_REPO": str(repo)}).db_url)
    try:
        branches = _fill_merge_queue(repo, store, keys, log)
        if run % 2:
            plain, tree = _plain_loop(repo, base, branches)
            drained = _drain(repo, store, log)
        else:
            drained = _drain(repo, store, log)
            plain, tree = _plain_loop(repo, base, branches)
    finally:
        store.close()
        _sh(repo, *_CW, "broker", "stop")
    if tree != _sh(repo, "git", "rev-parse", "cw/integration^{tree}"):
        raise SystemExit(f"run {run}: cw and the plain loop ended at different trees")
    return Run(drained, plain)


def summarize(runs: list[Run], merges: int) -> dict[str, object]:
    """Per-run seconds, medians, ms per merge and the ratio of the medians (cw / plain)."""
    cw = statistics.median(r.cw.seconds for r in runs)
    plain = statistics.median(r.plain for r in runs)
    return {
        "merges": merges,
        "runs": [
            {
                "cw_s": round(r.cw.seconds, 3),
                "plain_s": round(r.plain, 3),
                "ratio": round(r.cw.seconds / r.plain, 2),
            }
            for r in runs
        ],
        "cw_median_s": round(cw, 3),
        "plain_median_s": round(plain, 3),
        "cw_ms_per_merge": round(1000 * cw / merges, 1),
        "plain_ms_per_merge": round(1000 * plain / merges, 1),
        "cw_in_merge_ms": round(1000 * statistics.median(r.cw.in_merge for r in runs), 1),
        "cw_between_merges_ms": round(1000 * statistics.median(r.cw.between for r in runs), 1),
        "ratio": round(cw / plain, 2),
    }


def bench_merge(root: Path, n: int = 40, runs: int = 3) -> dict[str, object]:
    return summarize([_one_run(root, run, n) for run in range(runs)], n)


def row_merge(root: Path, sizes: Sizes) -> list[Row]:
    r = bench_merge(root, sizes.merge_branches, sizes.merge_runs)
    cw, plain, ratio = (float(str(r[k])) for k in ("cw_median_s", "plain_median_s", "ratio"))
    return [
        Row(
            f"merge throughput, {sizes.merge_branches} branches (median of {sizes.merge_runs})",
            f"{cw:.2f} s ({r['cw_ms_per_merge']} ms/merge)",
            f"plain `git merge` loop: {plain:.2f} s ({r['plain_ms_per_merge']} ms/merge)",
            ratio,
            "≤ 1.10x",
            ratio <= 1.10,
            r,
        )
    ]


if __name__ == "__main__":
    with tempfile.TemporaryDirectory(prefix="cwb-merge-") as tmp:
        print(json.dumps(bench_merge(Path(tmp)), indent=2))
