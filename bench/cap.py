"""A cap on agents in flight against none, on the merge path under load.

    .venv/bin/python bench/cap.py [TASKS] [ROUNDS] [--caps 4,6,8]

Issue 18 asks the scheduler to "claim only as many tasks as there are free slots". cw's
district-wide cap (``[max_running] command = N``, docs/agents.md) does that: each round runs
:func:`bench.load.one_run` (a DAG of TASKS tasks, agents of 0.3 s, three agent workers of four
slots, one merge worker) once without a cap and once per cap, in a rotating order, each on a
fresh district. Prints one JSON line per run, then the medians per setting
(docs/benchmarks.md, "A cap on agents in flight").
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

TOP = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TOP))

from bench.load import dag, one_run  # noqa: E402
from cw import defaults  # noqa: E402

KEYS = ("makespan_s", "merge_wait_p95_s", "merge_queue_max", "cw_processes_cpu_s")


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("tasks", type=int, nargs="?", default=500)
    parser.add_argument("rounds", type=int, nargs="?", default=2)
    parser.add_argument("--caps", default="4,6,8", help="caps to compare with none")
    args = parser.parse_args(argv)
    settings: list[int | None] = [None, *(int(c) for c in args.caps.split(","))]
    runs: dict[int | None, list[dict[str, float]]] = {cap: [] for cap in settings}
    with tempfile.TemporaryDirectory(prefix="cwb-cap-") as tmp:
        for r in range(args.rounds):
            for cap in settings[r % len(settings) :] + settings[: r % len(settings)]:
                config: dict[str, object] = {}
                if cap is not None:
                    config["max_running"] = {"command": cap}
                result = one_run(
                    Path(tmp), f"cap{cap}-{r}", defaults.AGENT_NICE, dag(args.tasks), config=config
                )
                runs[cap].append(result)
                print(json.dumps({"round": r, "cap": cap, **result}), flush=True)
    medians = {
        f"cap={cap}": {key: statistics.median(r[key] for r in rs) for key in KEYS}
        for cap, rs in runs.items()
    }
    print(json.dumps(medians, indent=2))


if __name__ == "__main__":
    main(sys.argv[1:])
