"""Idle worker memory: PSS summed over each worker's process tree, against plain Celery.

Each worker runs alone on its district's Redis until it answers a ping, then idles for a
few seconds; its memory is the sum of ``Pss`` in ``/proc/PID/smaps_rollup`` over the
process and all its descendants (the prefork pool; the merge worker's control worker),
the median of three samples a second apart. The baseline is a minimal Celery app
(``bench/rawcelery.py``) as ``celery worker -c 2`` on the same Redis.
"""

from __future__ import annotations

import statistics
import subprocess
import time
from pathlib import Path

from bench import rawcelery
from bench.district import CW, agent_env, await_workers, make_district, settings_of, sh
from bench.table import Row, Sizes
from cw.transport.celeryapp import make_app

SETTLE_SECONDS = 3.0


def descendants(pid: int) -> list[int]:
    """``pid`` and every process under it (from each process's ``children`` list)."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        for task in Path(f"/proc/{current}/task").glob("*"):
            try:
                todo += [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                continue
    return found


def pss_kib(pid: int) -> int:
    total = 0
    for p in descendants(pid):
        try:
            text = Path(f"/proc/{p}/smaps_rollup").read_text()
        except OSError:
            continue
        total += next(int(line.split()[1]) for line in text.splitlines() if line[:4] == "Pss:")
    return total


def idle_pss(proc: subprocess.Popen[bytes]) -> dict[str, object]:
    time.sleep(SETTLE_SECONDS)
    samples = []
    for _ in range(3):
        samples.append(pss_kib(proc.pid))
        time.sleep(1)
    return {
        "pss_mib": round(statistics.median(samples) / 1024, 1),
        "processes": len(descendants(proc.pid)),
    }


def cw_worker(repo: Path, nodes: int, *args: str) -> dict[str, object]:
    proc = subprocess.Popen(
        [*CW, "worker", *args, "--loglevel", "WARNING"],
        cwd=repo,
        env=agent_env(repo),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        await_workers(repo, nodes)
        return idle_pss(proc)
    finally:
        proc.terminate()
        proc.wait(30)


def bench_memory(root: Path) -> dict[str, dict[str, object]]:
    repo = make_district(root, "memory", {})
    try:
        agent = cw_worker(repo, 1, "-c", "2")
        merge = cw_worker(repo, 2, "--merge")
        raw = rawcelery.start(make_app(settings_of(repo)).conf.broker_url)
        try:
            plain = idle_pss(raw)
        finally:
            raw.terminate()
            raw.wait(30)
    finally:
        sh(repo, *CW, "broker", "stop")
    return {"cw_worker_c2": agent, "cw_worker_merge": merge, "celery_worker_c2": plain}


def row_memory(root: Path, sizes: Sizes) -> list[Row]:
    r = bench_memory(root)
    plain = float(str(r["celery_worker_c2"]["pss_mib"]))
    baseline = f"`celery worker -c 2`, minimal app: {plain:.0f} MiB"
    rows = []
    for name, key in (
        ("`cw worker -c 2`", "cw_worker_c2"),
        ("`cw worker --merge`", "cw_worker_merge"),
    ):
        mib = float(str(r[key]["pss_mib"]))
        rows.append(
            Row(
                f"idle memory (PSS, process tree), {name}",
                f"{mib:.0f} MiB",
                baseline,
                mib / plain,
                "≤ 1.2x",
                mib / plain <= 1.2,
                r[key],
            )
        )
    return rows
