"""The goals table of issue 18, each figure beside its baseline measured in the same run.

    make bench                                  # every row, full sizes (20-30 minutes on 2 cores)
    make bench-quick                            # every row, smaller sizes (under 3 minutes)
    .venv/bin/python bench/run.py [--quick] [ROW ...]     # some rows: makespan overhead ...
    .venv/bin/python bench/run.py resubmit      # the re-submit benchmark (JSON, not a row)

Prints the table as Markdown (figure, measured, baseline, ratio, goal, pass) and writes
every row's raw numbers to bench/results.json (not committed: docs/benchmarks.md carries the
table of the last full run). Each row is one function ``(root, sizes) -> list[Row]`` (a goal
with two baselines or three commands gives several lines).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

TOP = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TOP))

from bench.commands import row_listings, row_startup, row_submit  # noqa: E402
from bench.fsui import row_fsui  # noqa: E402
from bench.load import row_load  # noqa: E402
from bench.makespan import row_makespan  # noqa: E402
from bench.memory import row_memory  # noqa: E402
from bench.merge import row_merge  # noqa: E402
from bench.overhead import row_overhead  # noqa: E402
from bench.resubmit import bench_resubmit  # noqa: E402
from bench.scale import row_scale  # noqa: E402
from bench.table import FULL, QUICK, Row, Sizes, markdown, not_measured  # noqa: E402

RESULTS = TOP / "bench" / "results.json"
ROWS: dict[str, Callable[[Path, Sizes], list[Row]]] = {
    "makespan": row_makespan,
    "overhead": row_overhead,
    "merge": row_merge,
    "submit": row_submit,
    "listings": row_listings,
    "startup": row_startup,
    "fsui": row_fsui,
    "memory": row_memory,
    "load": row_load,
    "scale": row_scale,
}
EXTRAS: dict[str, Callable[[Path], dict[str, object]]] = {"resubmit": bench_resubmit}


def run_rows(names: list[str], sizes: Sizes, root: Path) -> dict[str, object]:
    rows: list[Row] = []
    seconds: dict[str, float] = {}
    for name in names:
        print(f"== {name}", file=sys.stderr, flush=True)
        start = time.monotonic()
        (root / name).mkdir(parents=True)
        try:
            found = ROWS[name](root / name, sizes)
        except (Exception, SystemExit) as error:  # one broken row leaves the others' figures
            found = [not_measured(name, f"the benchmark failed: {error}"[:300], "—")]
        seconds[name] = round(time.monotonic() - start, 1)
        for row in found:
            print(f"   {row.measured} | {row.baseline} | {row.passed}", file=sys.stderr)
        rows += found
    return {"rows": rows, "seconds": seconds}


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes, under 3 minutes")
    parser.add_argument("names", nargs="*", choices=[*ROWS, *EXTRAS, []], metavar="ROW")
    args = parser.parse_args(argv)
    extras = [name for name in args.names if name in EXTRAS]
    names = [name for name in args.names if name in ROWS]
    sizes = QUICK if args.quick else FULL
    root = Path(tempfile.mkdtemp(prefix="cwb-"))
    try:
        for name in extras:
            print(json.dumps({name: EXTRAS[name](root / name)}, indent=2))
        if extras and not names:
            return
        start = time.monotonic()
        found = run_rows(names or list(ROWS), sizes, root)
        total = time.monotonic() - start
    finally:
        shutil.rmtree(root, ignore_errors=True)
    rows = found["rows"]
    assert isinstance(rows, list)
    RESULTS.write_text(
        json.dumps(
            {
                "mode": sizes.label,
                "sizes": asdict(sizes),
                "at": datetime.now(UTC).isoformat(timespec="seconds"),
                "total_s": round(total, 1),
                "row_seconds": found["seconds"],
                "rows": [asdict(r) for r in rows],
            },
            indent=2,
        )
    )
    print(f"\n{sizes.label} run, {total / 60:.1f} min; raw numbers in {RESULTS.relative_to(TOP)}\n")
    print(markdown(rows))


if __name__ == "__main__":
    main(sys.argv[1:])
