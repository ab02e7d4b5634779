"""Benchmarks of the file-system UI (cw/fsui/watcher.py), printed as JSON.

    .venv/bin/python bench/fsui.py

- ``render``: the whole tree of a 10,000-task district written into an empty directory
  (median of three runs): files, seconds.
- ``edit_to_db``: 100 questions answered one after another by writing ``answer:`` into each
  message file, with the watcher running; milliseconds from the write until the database holds
  the answer (median, p95).
- ``db_to_file``: 100 tasks cancelled through the store; milliseconds until each task's file
  says so (median, p95).
"""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

TOP = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TOP))

from bench.table import Row, Sizes  # noqa: E402
from cw.fsui import mirror, watcher  # noqa: E402
from cw.plans.spec import InitiativeSpec, PhaseSpec, PlanSpec, TaskSpec, Where  # noqa: E402
from cw.settings import Settings  # noqa: E402
from cw.store import AttemptResult, Store  # noqa: E402
from cw.store.snapshot import Snapshot  # noqa: E402

HERE = Where("bench.yaml", 1)
TASKS = 10_000
PLANS = 20
ANSWERS = 100
RENDER_RUNS = 3
TIMEOUT_SECONDS = 10.0


def district(root: Path) -> tuple[Settings, Store]:
    repo = root / "repo"
    repo.mkdir(parents=True)
    git = ["git", "-c", "user.name=bench", "-c", "user.email=b@localhost"]
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=repo, check=True)
    (repo / "README.md").write_text("bench\n")
    subprocess.run([*git, "add", "-A"], cwd=repo, check=True)
    subprocess.run([*git, "commit", "-qm", "first"], cwd=repo, check=True)
    (repo / ".cw").mkdir()
    settings = Settings.load(env={"CW_REPO": str(repo)})
    return settings, Store.open(settings.db_url)


def big_spec(n: int, plans: int) -> InitiativeSpec:
    """n tasks in ``plans`` plans of one phase each, in chains of five."""
    per = n // plans
    phases = []
    for p in range(plans):
        keys = [f"t{p}-{i}" for i in range(per)]
        tasks = [
            TaskSpec(key=k, name=f"task {k}", kind="auto", prompt=f"Do {k}.\n\nCarefully.",
                     files=[], verify=None, done=None, depends_on=keys[i - 1 : i] if i % 5 else [],
                     extra={}, where=HERE)
            for i, k in enumerate(keys)
        ]  # fmt: skip
        plan = PlanSpec(f"{p:02d}-01", f"plan {p}", "objective", "", {}, tasks, HERE)
        phases.append(PhaseSpec(f"{p:02d}", f"phase {p}", [plan], {}, HERE))
    return InitiativeSpec("bench", "", phases, "bench.yaml")


def ask(store: Store, claims: int) -> None:
    """The first ``claims`` ready tasks: half fail, half ask one question each."""
    for i, claim in enumerate(store.claim_ready_tasks(limit=claims)):
        store.start_attempt(claim, worker="bench", host="h", lease_seconds=3600)
        if i % 2:
            store.finish_attempt(claim, AttemptResult(outcome="failed", error="boom"), "bench")
        else:
            question = {"id": "q", "text": f"Question {i}?", "options": ["yes", "no"]}
            result = AttemptResult(outcome="questions", questions=[question])
            store.finish_attempt(claim, result, "bench")


def bench_render(settings: Settings, store: Store, runs: int = RENDER_RUNS) -> dict[str, object]:
    seconds, files = [], 0
    for _ in range(runs):
        shutil.rmtree(watcher.mirror_root(settings), ignore_errors=True)
        (settings.state_dir / watcher.STATE_FILE).unlink(missing_ok=True)
        w = watcher.Watcher(settings, store)
        start = time.perf_counter()
        w.sync_all()
        seconds.append(time.perf_counter() - start)
        files = w.tally.written
    return {"files": files, "median_s": round(statistics.median(seconds), 2),
            "runs_s": [round(s, 2) for s in seconds]}  # fmt: skip


def running(settings: Settings) -> tuple[threading.Event, threading.Thread]:
    stop, ready = threading.Event(), threading.Event()
    thread = threading.Thread(
        target=watcher.run, args=(settings, stop), kwargs={"ready": lambda _w: ready.set()}
    )
    thread.start()
    if not ready.wait(120):
        raise SystemExit("the watcher did not start")
    return stop, thread


def until(predicate: Callable[[], bool]) -> float:
    """Seconds until ``predicate`` holds (polled every millisecond)."""
    start = time.perf_counter()
    while not predicate():
        if time.perf_counter() - start > TIMEOUT_SECONDS:
            raise SystemExit("timed out")
        time.sleep(0.001)
    return time.perf_counter() - start


def summary(samples: list[float]) -> dict[str, object]:
    ms = sorted(s * 1000 for s in samples)
    p95 = ms[min(len(ms) - 1, round(0.95 * len(ms)) - 1)]
    return {"n": len(ms), "median_ms": round(statistics.median(ms), 1), "p95_ms": round(p95, 1),
            "max_ms": round(ms[-1], 1)}  # fmt: skip


def bench_edits(settings: Settings, store: Store) -> dict[str, object]:
    snapshot = Snapshot(store.engine)
    root = watcher.mirror_root(settings)
    pending = [m for m in snapshot.messages() if m.state == "pending"][:ANSWERS]
    samples = []
    for message in pending:
        path = root / mirror.message_rel(message)
        text = path.read_text(encoding="utf-8")
        start = time.perf_counter()
        path.write_text(text.replace('answer: ""', "answer: yes", 1), encoding="utf-8")
        until(partial(_answered, snapshot, message.id))
        samples.append(time.perf_counter() - start)
    return summary(samples)


def _answered(snapshot: Snapshot, message_id: int) -> bool:
    return snapshot.messages([message_id])[0].state == "answered"


def _says_cancelled(path: Path) -> bool:
    return "state: cancelled" in path.read_text(encoding="utf-8")


def bench_changes(settings: Settings, store: Store) -> dict[str, object]:
    root = watcher.mirror_root(settings)
    snapshot = Snapshot(store.engine)
    ready = [t for t in snapshot.tasks() if t.state == "ready"][:ANSWERS]
    samples = []
    for task in ready:
        path = root / mirror.task_rel(task)
        start = time.perf_counter()
        store.cancel_task(task.id)
        until(partial(_says_cancelled, path))
        samples.append(time.perf_counter() - start)
    return summary(samples)


def bench_fsui(root: Path) -> dict[str, object]:
    """All three measures on one 10,000-task district under ``root``."""
    settings, store = district(root / "fsui")
    store.submit(big_spec(TASKS, PLANS))
    ask(store, 2 * ANSWERS)
    results: dict[str, object] = {"render": bench_render(settings, store)}
    stop, thread = running(settings)
    try:
        results["edit_to_db"] = bench_edits(settings, store)
        results["db_to_file"] = bench_changes(settings, store)
    finally:
        stop.set()
        thread.join()
        store.close()
    return results


def bench_one_change(settings: Settings, store: Store, changes: int) -> dict[str, object]:
    """After a full render, ``changes`` tasks cancelled one by one, each followed by one
    pass of the watcher over the new events (in process, no polling): ms and files written."""
    w = watcher.Watcher(settings, store)
    w.sync_all()
    ready = [t for t in w.snapshot.tasks() if t.state == "ready"][:changes]
    samples, files = [], []
    for task in ready:
        store.cancel_task(task.id)
        written = w.tally.written
        start = time.perf_counter()
        w.follow()
        samples.append(time.perf_counter() - start)
        files.append(w.tally.written - written)
    return {**summary(samples), "files_written_max": max(files)}


def row_fsui(root: Path, sizes: Sizes) -> list[Row]:
    """The full render of ``sizes.fsui_tasks`` tasks, and one task's change."""
    settings, store = district(root / "fsui")
    try:
        store.submit(big_spec(sizes.fsui_tasks, PLANS))
        ask(store, 2 * ANSWERS)
        render = bench_render(settings, store, 1 if sizes.label == "quick" else RENDER_RUNS)
        change = bench_one_change(settings, store, 20)
    finally:
        store.close()
    full, one = float(str(render["median_s"])), float(str(change["median_ms"]))
    return [
        Row(f"file UI, full render of {sizes.fsui_tasks:,} tasks ({render['files']} files)",
            f"{full:.2f} s", "—", None, "≤ 1 s", full <= 1, render),
        Row(f"file UI, one task's change at {sizes.fsui_tasks:,} tasks (median of 20)",
            f"{one:.1f} ms, at most {change['files_written_max']} files rewritten", "—", None,
            "≤ 20 ms, only the files it touches", one <= 20, change),
    ]  # fmt: skip


def main() -> None:
    root = Path(tempfile.mkdtemp(prefix="cwb-fsui-"))
    try:
        print(json.dumps(bench_fsui(root), indent=2))
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
