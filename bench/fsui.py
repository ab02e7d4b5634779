"""Benchmarks of the file-system UI (cw/fsui/watcher.py), printed as JSON.

    .venv/bin/python bench/fsui.py

- ``render``: the whole tree of a 10,000-task district written into an empty directory
  (median of three runs): files, seconds, and the process's CPU seconds (user and kernel;
  steadier than seconds on a shared machine).
- ``edit_to_db``: 100 questions answered one after another by writing ``answer:`` into each
  message file, with the watcher running; milliseconds from the write until the database holds
  the answer (median, p95).
- ``db_to_file``: 100 tasks cancelled through the store; milliseconds until each task's file
  says so (median, p95), with the watcher running (it looks at the database every 0.2 s).
- ``one_change``: 20 tasks cancelled one at a time through the store, each followed by one
  step of a watcher driven in process: milliseconds of that step (reading the events,
  rendering, writing), the most files one step rewrote (the task's, the tasks its
  cancellation blocked, STATUS.md), and how many rewrites left a file as it was (none).
"""

from __future__ import annotations

import json
import os
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
from cw.fsui import mirror, place, watcher  # noqa: E402
from cw.plans.spec import InitiativeSpec, PhaseSpec, PlanSpec, TaskSpec, Where  # noqa: E402
from cw.settings import Settings  # noqa: E402
from cw.store import AttemptResult, Store  # noqa: E402
from cw.store.records import Question  # noqa: E402
from cw.store.snapshot import Snapshot  # noqa: E402

HERE = Where("bench.yaml", 1)
TASKS = 10_000
PLANS = 20
ANSWERS = 100
RENDER_RUNS = 3
CHANGES = 20
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
            question = Question(id="q", text=f"Question {i}?", options=["yes", "no"])
            result = AttemptResult(outcome="questions", questions=[question])
            store.finish_attempt(claim, result, "bench")


def bench_render(settings: Settings, store: Store, runs: int = RENDER_RUNS) -> dict[str, object]:
    """Each render goes into an empty directory; the one before is moved aside, not deleted:
    ext4 without a journal (this machine's disk) passes over the inodes freed in the last
    30 s each time it makes a file, so 10,000 files deleted just before would make the next
    render mostly measure that search."""
    seconds, cpu, files = [], [], 0
    for run in range(runs):
        mirror_dir = place.mirror_root(settings)
        if mirror_dir.exists():
            mirror_dir.rename(settings.repo.parent / f"render-{run}")
        for record in settings.state_dir.glob("fsui-state.*"):  # what the last render wrote
            record.unlink()
        w = watcher.Watcher(settings, store)
        start, used = time.perf_counter(), os.times()
        w.sync_all()
        seconds.append(time.perf_counter() - start)
        cpu.append(sum(os.times()[:2]) - sum(used[:2]))
        files = w.tally.written
    return {"tasks": TASKS, "files": files, "median_s": round(statistics.median(seconds), 2),
            "runs_s": [round(s, 2) for s in seconds],
            "cpu_median_s": round(statistics.median(cpu), 2)}  # fmt: skip


def files_of(root: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``root`` with its inode and modification time: a rewrite changes them."""
    out = {}
    for folder, _dirs, names in os.walk(root):
        for name in names:
            path = os.path.join(folder, name)
            st = os.lstat(path)
            out[os.path.relpath(path, root)] = (st.st_ino, st.st_mtime_ns)
    return out


def bench_one_change(settings: Settings, store: Store, changes: int = CHANGES) -> dict[str, object]:
    w = watcher.Watcher(settings, store)
    w.sync_all()
    root = place.mirror_root(settings)
    texts = {rel: (root / rel).read_bytes() for rel in files_of(root)}
    ready = [t for t in w.snapshot.tasks() if t.state == "ready"][-changes:]
    samples, rewritten, unchanged = [], [], 0
    for task in ready:
        before = files_of(root)
        store.cancel_task(task.id)
        start = time.perf_counter()
        w.follow()
        samples.append(time.perf_counter() - start)
        after = files_of(root)
        changed = [rel for rel, seen in after.items() if before.get(rel) != seen]
        rewritten.append(len(changed))
        for rel in changed:
            data = (root / rel).read_bytes()
            unchanged += data == texts.get(rel)
            texts[rel] = data
    return {**summary(samples), "files_rewritten_max": max(rewritten),
            "rewritten_unchanged": unchanged}  # fmt: skip


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
    root = place.mirror_root(settings)
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
    root = place.mirror_root(settings)
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
    results["one_change"] = bench_one_change(settings, store)
    stop, thread = running(settings)
    try:
        results["edit_to_db"] = bench_edits(settings, store)
        results["db_to_file"] = bench_changes(settings, store)
    finally:
        stop.set()
        thread.join()
        store.close()
    return results


def row_fsui(root: Path, sizes: Sizes) -> list[Row]:
    """The full render of ``sizes.fsui_tasks`` tasks, and one task's change."""
    settings, store = district(root / "fsui")
    try:
        store.submit(big_spec(sizes.fsui_tasks, PLANS))
        ask(store, 2 * ANSWERS)
        render = bench_render(settings, store, 1 if sizes.label == "quick" else RENDER_RUNS)
        change = bench_one_change(settings, store)
    finally:
        store.close()
    full, one = float(str(render["median_s"])), float(str(change["median_ms"]))
    return [
        Row(f"file UI, full render of {sizes.fsui_tasks:,} tasks ({render['files']} files)",
            f"{full:.2f} s", "—", None, "≤ 1 s", full <= 1, render),
        Row(f"file UI, one task's change at {sizes.fsui_tasks:,} tasks (median of 20)",
            f"{one:.1f} ms, at most {change['files_rewritten_max']} files rewritten", "—", None,
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
