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
import sys
from pathlib import Path

TOP = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TOP))

from bench.load import taking_turns  # noqa: E402


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("tasks", type=int, nargs="?", default=500)
    parser.add_argument("rounds", type=int, nargs="?", default=2)
    parser.add_argument("--caps", default="4,6,8", help="caps to compare with none")
    args = parser.parse_args(argv)
    settings: dict[str, dict[str, object]] = {"cap=none": {}}
    for cap in (int(c) for c in args.caps.split(",")):
        settings[f"cap={cap}"] = {"max_running": {"command": cap}}
    taking_turns(settings, args.tasks, args.rounds)


if __name__ == "__main__":
    main(sys.argv[1:])
