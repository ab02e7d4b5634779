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
import sys
from pathlib import Path

TOP = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TOP))

from bench.load import taking_turns  # noqa: E402

TRAINS = (1, 8)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("tasks", type=int, nargs="?", default=500)
    parser.add_argument("rounds", type=int, nargs="?", default=2)
    parser.add_argument("--slots", default="4,4,4", help="agent workers' slots, e.g. 2,2")
    parser.add_argument("--verify", default="", help="the project's verify command")
    args = parser.parse_args(argv)
    verify = {"verify_command": args.verify} if args.verify else {}
    settings = {f"merge_train={train}": {"merge_train": train, **verify} for train in TRAINS}
    slots = [int(n) for n in args.slots.split(",")]
    taking_turns(settings, args.tasks, args.rounds, slots)


if __name__ == "__main__":
    main(sys.argv[1:])
