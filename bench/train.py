"""Merge trains against one merge per message, taking turns on the same code.

    .venv/bin/python bench/train.py [TASKS] [ROUNDS] [--slots 4,4,4] [--verify CMD]

Each round runs :func:`bench.load.one_run` (a DAG of TASKS tasks, agents of 0.3 s, agent
workers of the given slots, one merge worker, the default ``agent_nice``) once with
``merge_train = 1`` and once with ``merge_train = 8``, in a rotating order, each on a fresh
district; ``--verify`` sets the project's ``verify_command`` (e.g. ``"sleep 0.2"``). Prints
one JSON line per run, then the medians per setting (docs/benchmarks.md, "Merge trains").
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

TRAINS = (1, 8)
KEYS = ("merge_wait_p95_s", "merge_queue_max", "makespan_s", "cw_processes_cpu_s")


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("tasks", type=int, nargs="?", default=500)
    parser.add_argument("rounds", type=int, nargs="?", default=2)
    parser.add_argument("--slots", default="4,4,4", help="agent workers' slots, e.g. 2,2")
    parser.add_argument("--verify", default="", help="the project's verify command")
    args = parser.parse_args(argv)
    slots = [int(n) for n in args.slots.split(",")]
    runs: dict[int, list[dict[str, float]]] = {train: [] for train in TRAINS}
    with tempfile.TemporaryDirectory(prefix="cwb-train-") as tmp:
        for r in range(args.rounds):
            for train in TRAINS[r % 2 :] + TRAINS[: r % 2]:
                config: dict[str, object] = {"merge_train": train}
                if args.verify:
                    config["verify_command"] = args.verify
                name = f"train{train}-{r}"
                tasks = dag(args.tasks)
                result = one_run(Path(tmp), name, defaults.AGENT_NICE, tasks, slots, config=config)
                runs[train].append(result)
                print(json.dumps({"round": r, "merge_train": train, **result}), flush=True)
    medians = {
        f"merge_train={train}": {key: statistics.median(r[key] for r in rs) for key in KEYS}
        for train, rs in runs.items()
    }
    print(json.dumps(medians, indent=2))


if __name__ == "__main__":
    main(sys.argv[1:])
