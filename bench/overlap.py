"""Tasks that declare the same files: conflict bounces and makespan per ``overlap`` setting.

    .venv/bin/python bench/overlap.py [ROUNDS]   # prints JSON (about 1 minute a round)

40 independent tasks, each with a file of its own; 16 of them in four groups of four that also
declare one shared file per group (planted overlaps: the groups are neighbours in the plan, so
dispatch order alone would run each group side by side). The agent, a shell script, works for
its task's duration (0.4-1.2 s) then appends a line to each file it declares; a bounced attempt
keeps both sides of the conflict and works half as long. One agent worker with 4 slots, one
merge worker. Each round runs ``ignore``, ``prefer`` and ``strict`` on fresh repositories, in
a rotating order. Reported per mode: bounces (the merge sent the work back for a conflict) and
makespan (submission to the last merge, from the database), with medians over the rounds.
"""

from __future__ import annotations

import json
import random
import sqlite3
import statistics
import sys
import tempfile
from pathlib import Path

TOP = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TOP))

from bench.district import CW, run_plan, sh, workers  # noqa: E402

MODES = ("ignore", "prefer", "strict")
SLOTS = 4
GROUPS = {0: "hot/a.txt", 10: "hot/b.txt", 20: "hot/c.txt", 30: "hot/d.txt"}  # first task: file
AGENT = """\
line=$(grep "^$CW_TASK_KEY " "$BENCH_DURATIONS")
seconds=$(echo "$line" | cut -d' ' -f2)
files=$(echo "$line" | cut -d' ' -f3-)
if [ -n "$CW_BOUNCE" ]; then
  for f in $CW_CONFLICT_FILES; do sed -i '/^<<<<<<< \\|^=======$\\|^>>>>>>> /d' "$f"; done
  seconds=$(awk "BEGIN { print $seconds / 2 }")
fi
sleep "$seconds"
for f in $files; do mkdir -p "$(dirname "$f")"; echo "$CW_TASK_KEY $CW_ATTEMPT" >> "$f"; done
"""


def corpus(seed: int = 11) -> tuple[list[dict[str, object]], dict[str, str]]:
    """The plan's tasks and, per task, its duration and files (the agent's lookup lines)."""
    rng = random.Random(seed)
    tasks: list[dict[str, object]] = []
    lookup: dict[str, str] = {}
    for i in range(40):
        key = f"t{i:02d}"
        files = [f"own/{key}.txt"]
        start = max((g for g in GROUPS if g <= i), default=None)
        if start is not None and i < start + 4:
            files.append(GROUPS[start])
        tasks.append({"id": key, "prompt": f"task {key}", "files": files})
        lookup[key] = f"{rng.uniform(0.4, 1.2):.2f} {' '.join(files)}"
    return tasks, lookup


def district(root: Path, name: str, mode: str, lookup: dict[str, str]) -> Path:
    repo = root / name
    repo.mkdir(parents=True)
    sh(repo, "git", "init", "-q", "-b", "main")
    for folder in ("own", "hot"):
        (repo / folder).mkdir()
        (repo / folder / ".keep").write_text("")
    for path in GROUPS.values():
        (repo / path).write_text("shared\n")
    sh(repo, "git", "add", "-A")
    sh(repo, "git", "commit", "-q", "-m", "first")
    sh(repo, *CW, "init")
    agent = repo.parent / f"{name}.sh"
    agent.write_text(AGENT)
    (repo.parent / f"{name}.durations").write_text("".join(f"{k} {v}\n" for k, v in lookup.items()))
    with open(repo / ".cw" / "config.toml", "a") as config:
        config.write(f'agent_command = "sh {agent}"\noverlap = "{mode}"\nmax_bounces = 20\n')
    return repo


def one_run(root: Path, name: str, mode: str) -> dict[str, float]:
    tasks, lookup = corpus()
    repo = district(root, name, mode, lookup)
    with workers(repo, [SLOTS]):
        span, _wall = run_plan(repo, tasks, name)
    with sqlite3.connect(repo / ".cw" / "cw.db") as db:
        bounces = db.execute("SELECT sum(bounces) FROM tasks").fetchone()[0] or 0
    return {"makespan_s": round(span, 2), "bounces": int(bounces)}


def main(rounds: int) -> None:
    runs: dict[str, list[dict[str, float]]] = {mode: [] for mode in MODES}
    with tempfile.TemporaryDirectory(prefix="cwb-overlap-") as tmp:
        for n in range(rounds):
            order = MODES[n % 3 :] + MODES[: n % 3]
            for mode in order:
                runs[mode].append(one_run(Path(tmp), f"{mode}{n}", mode))
                print(json.dumps({"round": n, "mode": mode, **runs[mode][-1]}), file=sys.stderr)
    summary = {
        mode: {
            "runs": rs,
            "bounces_median": statistics.median(r["bounces"] for r in rs),
            "makespan_median_s": statistics.median(r["makespan_s"] for r in rs),
        }
        for mode, rs in runs.items()
    }
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 3)
