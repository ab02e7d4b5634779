"""max_running: a district-wide cap on agents at once, held across every worker through the
database, however many worker slots there are."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.integration.conftest import District

pytestmark = pytest.mark.redis

TASKS = [f"t{n:02}" for n in range(12)]
CAP = 4
#: The agent: marks itself running while it works, and logs when it started and ended. The
#: first ones wait for ``go``, which the test writes once the cap is reached (a loaded
#: machine's staggered starts would otherwise never fill it).
AGENT = """set -e
touch "$RUNNING/$CW_TASK_KEY"
echo "start $(date +%s.%N)" >> "$RUNNING/../log"
n=0; while [ ! -e "$RUNNING/../go" ] && [ $n -lt 600 ]; do sleep 0.1; n=$((n+1)); done
sleep 0.8
echo "$CW_TASK_KEY" > "$CW_TASK_KEY.txt"
echo "end $(date +%s.%N)" >> "$RUNNING/../log"
rm "$RUNNING/$CW_TASK_KEY"
"""


def most_at_once(log: Path) -> int:
    """The most agents that ran at one time, from their start and end times."""
    moves = []
    for line in log.read_text().splitlines():
        what, at = line.split()
        moves.append((float(at), 1 if what == "start" else -1))
    running = peak = 0
    for _, step in sorted(moves, key=lambda m: (m[0], m[1])):  # an end before a start at a tie
        running += step
        peak = max(peak, running)
    return peak


def test_three_workers_of_four_slots_never_run_more_agents_than_the_cap(
    district: Callable[..., District], tmp_path: Path
) -> None:
    running = tmp_path / "agent" / "running"
    running.mkdir(parents=True)
    (tmp_path / "agent" / "agent.sh").write_text(AGENT)
    d = district(
        {"CW_AGENT_COMMAND": f"sh {tmp_path / 'agent' / 'agent.sh'}",
         "CW_MAX_RUNNING_COMMAND": str(CAP)},
        extra={"RUNNING": str(running)},
    )  # fmt: skip
    for n in range(3):
        d.start_worker(f"agents{n}", "agents", count=4)
    d.start_worker("merge", "merge")
    d.wait_for_workers(4)

    samples: list[int] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.05):
            samples.append(len(list(running.iterdir())))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        d.submit({key: [] for key in TASKS})
        d.wait_for(lambda: len(list(running.iterdir())) >= CAP, 60, "the cap reached")
        (tmp_path / "agent" / "go").touch()
        assert d.wait_settled(timeout=120) == dict.fromkeys(TASKS, "done")
    finally:
        stop.set()
        sampler.join()
    assert max(samples) <= CAP, f"sampled {max(samples)} agents at once"
    assert most_at_once(tmp_path / "agent" / "log") == CAP, "never over the cap, and it was used"
    assert sorted(d.merged()) == TASKS
