"""A 20-task plan with dependencies while workers are SIGKILLed again and again.

Each kill lands at a random instant inside one step, the one killed least so far when it comes
soon enough: `git worktree add` (a smudge filter makes its checkout slow), the agent's run,
cw's commit of the agent's work (a clean filter makes `git add` slow) or the merge (a verify
command). The killed worker is started
again at once. In the end every task is done, its file is on the integration branch, and
`cw doctor` finds nothing wrong once `cw doctor --fix` removed what the kills left.

``CW_TEST_CHAOS_KILLS`` sets how many kills (4 in the normal suite; `make chaos` runs 50).
"""

from __future__ import annotations

import os
import random
import signal
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

from tests.chaos.reconciler import start_reconciler
from tests.conftest import git
from tests.integration.conftest import District

KILLS = int(os.environ.get("CW_TEST_CHAOS_KILLS", "4"))
#: Each step is slower for more kills, so that the plan lasts until the last of them.
SLOW = max(1.0, KILLS / 15)
pytestmark = [pytest.mark.redis, pytest.mark.timeout(120 + 15 * KILLS)]
PHASES = ("add", "agent", "commit", "merge")
PATIENCE_SECONDS = 8.0
#: Four layers of five tasks; each task after the first layer needs two of the layer before.
LAYERS = [[f"t{layer}{n}" for n in range(5)] for layer in range(4)]
EDGES = {
    key: [] if layer == 0 else [LAYERS[layer - 1][n], LAYERS[layer - 1][(n + 1) % 5]]
    for layer, keys in enumerate(LAYERS)
    for n, key in enumerate(keys)
}


def slow_steps(repo: Path, marks: Path) -> None:
    """Filters and a file that make a worktree's checkout and cw's `git add` take a while, each
    touching a mark when it starts so that the test knows which step is running."""
    marks.mkdir()
    scripts = repo.parent / "scripts"
    scripts.mkdir()
    # The merge worker checks files out too, in .cw/integration (for the verify step): not a
    # `git worktree add` of an agent worker, so no mark.
    (scripts / "smudge").write_text(
        f'case "$PWD" in */.cw/integration) ;; *) touch {marks}/add;; esac\n'
        f"sleep {0.4 * SLOW}; cat\n"
    )
    (scripts / "clean").write_text(f"touch {marks}/commit; sleep {0.3 * SLOW}; cat\n")
    (repo / ".gitattributes").write_text("*.slow filter=slow\n*.txt filter=slowtxt\n")
    (repo / "big.slow").write_text("checked out slowly\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "slow steps")
    for key, value in {
        "filter.slow.smudge": f"sh {scripts}/smudge",
        "filter.slow.clean": "cat",
        "filter.slowtxt.smudge": "cat",
        "filter.slowtxt.clean": f"sh {scripts}/clean",
    }.items():
        git(repo, "config", key, value)
    git(repo, "branch", "-f", "cw/integration", "main")


def next_phase(marks: Path, d: District, kills: Counter[str]) -> str:
    """The step killed least so far when it starts within ``PATIENCE_SECONDS``; otherwise the
    step that starts first (the least killed of several), or "anywhere" after 20 s."""
    wanted = min(PHASES, key=lambda phase: kills[phase])
    patient, deadline = time.monotonic() + PATIENCE_SECONDS, time.monotonic() + 20
    while time.monotonic() < deadline and not finished(d):
        seen = [phase for phase in PHASES if (marks / phase).exists()]
        if wanted in seen:
            return wanted
        if seen and time.monotonic() > patient:
            return min(seen, key=lambda phase: kills[phase])
        time.sleep(0.02)
    return "anywhere"


def finished(d: District) -> bool:
    return set(d.states().values()) == {"done"}


def agents_after_finishing(d: District, key: str) -> list[int]:
    """Attempts whose agent started after an earlier agent of the task had finished its work."""
    events = d.store.events(d.store.find_task_id(key))
    done = min(e["id"] for e in events if e["kind"] == "agent.finished")
    return [e["attempt"] for e in events if e["kind"] == "agent.started" and e["id"] > done]


def kill(proc: psutil.Process) -> None:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)


def test_workers_killed_in_every_step_lose_no_task_and_leave_nothing_behind(
    district: Callable[..., District], tmp_path: Path
) -> None:
    marks = tmp_path / "marks"
    d = district({
        "CW_AGENT_COMMAND": f'touch {marks}/agent; sleep {0.5 * SLOW}; echo "$CW_TASK_KEY" > '
                            '"$CW_TASK_KEY.txt"',
        "CW_VERIFY_COMMAND": f"touch {marks}/merge; sleep {0.3 * SLOW}",
    })  # fmt: skip
    slow_steps(d.repo, marks)
    workers = {
        "agents": d.start_worker("agents0", "agents", 2),
        "merge": d.start_worker("merge0", "merge"),
    }
    start_reconciler(d.processes, d.child_env(), "reconciler")
    seed = random.randrange(1 << 32)
    rng = random.Random(seed)
    started = time.monotonic()
    d.submit(EDGES)

    kills: Counter[str] = Counter()
    while sum(kills.values()) < KILLS and not finished(d):
        for mark in marks.iterdir():
            mark.unlink()
        phase = next_phase(marks, d, kills)
        time.sleep(rng.uniform(0.0, 0.3))
        victim = "merge" if phase == "merge" else "agents"
        kill(workers[victim])
        kills[phase] += 1
        n = sum(kills.values())
        workers[victim] = d.start_worker(f"{victim}{n}", victim, 1 if victim == "merge" else 2)

    states = d.wait_settled(timeout=300)
    took = time.monotonic() - started
    print(f"CHAOS seed {seed}: {sum(kills.values())} kills {dict(kills)}; all done {took:.0f} s")
    assert states == dict.fromkeys(EDGES, "done")
    for key in EDGES:
        assert git(d.repo, "show", f"cw/integration:{key}.txt") == key
    assert sorted(d.merged()) == sorted(EDGES), "each task merged once"
    for key in EDGES:
        assert not agents_after_finishing(d, key), f"{key}'s agent ran again after it finished"
    before = d.cw("doctor", check=False).stdout
    print(before)
    d.cw("doctor", "--fix", check=False)
    doctor = d.cw("doctor", check=False)
    assert doctor.returncode == 0, f"{before}\nafter --fix:\n{doctor.stdout}"
